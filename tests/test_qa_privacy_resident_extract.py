"""A refused 宛名 extract (``renkei import notices --residents``) is explained without
printing a resident.

The refusal goes to stderr, which a scheduled import hands to its log (cron mail, the
journal). An extract saved without its header row starts with a resident's record, and a
row whose 氏名 holds an unquoted comma shifts its address into 住民種別: both used to be
echoed whole in RK-IMP008 / RK-IMP016. Real ``renkei`` processes, real files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RENKEI = str(Path(sys.executable).parent / "renkei")
NAME = "髙橋　ＰＲＩＶＡＣＹ太郎"
KANA = "タカハシ　プライバシタロウ"
ADDRESS = "佐賀県PRIVACY町1-2-3"
HEADER = "宛名番号,氏名,氏名カナ,住所,住民種別,住民状態,法人番号"
NOTICES = ROOT / "samples" / "notices" / "traps-cp932.csv"

EXTRACTS = {
    "no header row": (f"1000000001,{NAME},{KANA},{ADDRESS},1,1,\n", "RK-IMP008", "宛名番号, 氏名"),
    "a comma in 氏名": (
        f"{HEADER}\n1000000001,髙橋,ＰＲＩＶＡＣＹ太郎,{KANA},{ADDRESS},1,1,\n",
        "RK-IMP016",
        "2 行目の住民種別",
    ),
}


@pytest.mark.parametrize("case", sorted(EXTRACTS))
def test_a_refused_extract_names_the_problem_but_no_resident(tmp_path: Path, case: str) -> None:
    text, code, explained = EXTRACTS[case]
    extract = tmp_path / "residents.csv"
    extract.write_text(text, encoding="utf-8")
    command = [RENKEI, "import", "notices", str(NOTICES), "--tenant", "412066"]
    command += ["--residents", str(extract), "--out", str(tmp_path / "out")]
    environment = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "500"}

    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, timeout=120)

    said = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 2, said
    assert code in said and explained in said and "Traceback" not in said
    leaked = [v for v in (NAME, "ＰＲＩＶＡＣＹ", "PRIVACY", KANA, "1000000001") if v in said]
    assert not leaked, said
