"""Mapping throughput: the 滞納管理 mapping on a 114-field message, and the engine side by side
with an lxml XSLT on the subset an XSLT does naturally (copy, rename, code table).

* **full**: bytes of 滞納管理's own XML (滞納処分通知 with enough 差押 records for 114 leaf
  values) → the standard service element's bytes, with every operation of the shipped
  mapping (和暦 → ISO, 外字 table, code table, groups).
* The input is a corpus of distinct documents (``--documents``, seeded): every date drawn
  from 平成26年–令和8年 on its own, amounts, numbers, names, 税目 and 差押 records varied, so
  no cache sees one document over and over; each round cycles through the whole corpus.
* **subset**: the same document, only copy/rename + the 税目 code table, done by (a) the
  engine with a mapping file holding just those entries and (b) an XSLT 1.0 stylesheet
  generated from the same entries (lxml ``XSLT``, the code table as an embedded lookup),
  both bytes in → bytes out on one thread. Rounds alternate; the best round is reported.

Run: ``.venv/bin/python bench/mapping_throughput.py`` (``taskset -c 0`` to pin one core).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import random
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lxml import etree

from bus.catalogue import load_catalogue
from bus.config.models import System
from bus.mapping import load_mapping, operations
from bus.mapping.layout import service_layout
from bus.mapping.stage import outbound_body
from bus.mapping.standard import PREFIXES
from bus.resources import data_dir

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "DelinquencyActionNotice"
TN = "urn:example:tainou:1"
FIELDS = 114


def document() -> tuple[etree._Element, int]:
    """滞納管理's 滞納処分通知 with 差押 records added until it holds 114 leaf values."""
    sample = (ROOT / "samples/messages" / SERVICE / "valid-full.xml").read_bytes()
    system = System(id="tainou", name="滞納管理", mapping="tainou.yaml")
    body = etree.fromstring(outbound_body(system, SERVICE, sample))[1]
    seizures = body.find(f"{{{TN}}}差押一覧")
    assert seizures is not None

    def leaves() -> int:
        return sum(1 for e in body.iter() if len(e) == 0) + sum(len(e.attrib) for e in body.iter())

    template = seizures[0]
    while leaves() < FIELDS:
        seizures.append(copy.deepcopy(template))
    return body, leaves()


_WAREKI = re.compile(r"(?:平成|令和)(?:元|[0-9]{1,2})年[0-9]{1,2}月[0-9]{1,2}日")
_AMOUNTS = {"調定額", "滞納額", "延滞金", "督促手数料", "分納額", "見積価額"}
_NAMES = ("田\u3000結衣", "\ue000田\u3000結衣", "佐藤\u3000健一", "髙橋\u3000美咲", "中島\u3000翔")
_PROPERTY = (  # 物件種別 (schemas/codes/seized_property_kind.csv) and 物件
    ("01", "土地 武雄町大字武雄字川原123番"),
    ("02", "預金債権 佐賀銀行嬉野支店 普通"),
    ("03", "給与債権（一部）"),
    ("08", "自動車 佐賀500あ1234"),
)
_FIRST_DAY = datetime.date(2014, 1, 1)
_DAYS = (datetime.date(2026, 12, 31) - _FIRST_DAY).days


def corpus(template: etree._Element, count: int, seed: int = 5) -> list[bytes]:
    """``count`` distinct documents of the template's shape (seeded): each date, amount,
    number, name, 税目 and 差押 record drawn on its own."""
    rng = random.Random(seed)
    table = (data_dir("mappings") / "tables" / "tainou_tax_item.csv").read_text().splitlines()
    tax_items = [row.split(",")[0] for row in table[1:]]
    documents = []
    for _ in range(count):
        body = copy.deepcopy(template)
        for element in body.iter():
            name = etree.QName(element).localname
            text = element.text or ""
            if _WAREKI.fullmatch(text):
                day = _FIRST_DAY + datetime.timedelta(days=rng.randrange(_DAYS + 1))
                element.text = operations.format_date(day, "wareki")
            elif name in _AMOUNTS:
                element.text = str(rng.randrange(1, 20000) * 100)
            elif name == "宛名番号":
                element.text = f"{rng.randrange(10**10):010d}"
            elif name == "通知書番号":
                element.text = f"R0{rng.randrange(1, 9)}-{rng.randrange(10**6):06d}"
            elif name == "滞納整理番号":
                element.text = f"T20{rng.randrange(14, 27)}-{rng.randrange(10**5):05d}"
            elif name == "氏名":
                element.text = rng.choice(_NAMES)
            elif name == "税目":
                element.text = rng.choice(tax_items)
            elif name == "差押":
                kind, description = rng.choice(_PROPERTY)
                element.find(f"{{{TN}}}物件種別").text = kind  # type: ignore[union-attr]
                element.find(f"{{{TN}}}物件").text = description  # type: ignore[union-attr]
            elif name == "回数":
                element.text = str(rng.randrange(2, 25))
        documents.append(etree.tostring(body, encoding="UTF-8"))
    assert len(set(documents)) == count, "the corpus repeats a document"
    return documents


def subset_entries() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(single entries, seizure entries) of the shipped mapping without operations other than
    the 税目 code table: (system path, catalogue id)."""
    singles: list[tuple[str, str]] = []
    group: list[tuple[str, str]] = []
    lines = (data_dir("mappings") / "tainou.yaml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {SERVICE}:"))
    for line in lines[start:]:
        text = line.strip()
        if not text.startswith("- {to: ") or "date:" in text or "gaiji" in text:
            continue
        item = text.split("to: ")[1].split(",")[0]
        path = text.split("from: ")[1].split(",")[0].rstrip("}")
        if load_catalogue().by_id.get(item) is None or path.startswith(("local", "addr")):
            continue
        (group if item.startswith("seized") else singles).append((path, item))
    return _dedupe(singles), _dedupe(group)


def _dedupe(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for path, item in entries:
        seen.setdefault(item, path)
    return [(path, item) for item, path in seen.items()]


def subset_mapping(singles: list[tuple[str, str]], group: list[tuple[str, str]]) -> str:
    lines = [
        "system: tainou",
        f"namespaces: {{tn: '{TN}'}}",
        "services:",
        f"  {SERVICE}:",
        "    inbound:",
        "      format: xml",
        f"      root: tn:{'滞納処分通知'}",
        "      fields:",
    ]
    for path, item in singles:
        codes = ", codes: tainou_tax_item" if item == "taxItem" else ""
        lines.append(f"        - {{to: {item}, from: '{path}'{codes}}}")
    lines += [
        "        - group: seizure",
        "          path: tn:差押一覧/tn:差押",
        "          fields:",
    ]
    lines += [f"            - {{to: {item}, from: '{path}'}}" for path, item in group]
    return "\n".join(lines) + "\n"


def stylesheet(singles: list[tuple[str, str]], group: list[tuple[str, str]]) -> etree.XSLT:
    """The same copy/rename/code-table subset as XSLT 1.0, written the way one would by hand:
    one template, one xsl:element per field in the standard's order."""
    catalogue = load_catalogue()
    order = [leaf.item for leaf in service_layout(SERVICE).leaves()]
    by_item = dict((item, path) for path, item in singles)
    table = (data_dir("mappings") / "tables" / "tainou_tax_item.csv").read_text().splitlines()[1:]
    codes = "".join(f'<c s="{row.split(",")[0]}">{row.split(",")[1]}</c>' for row in table)

    def element(item: str, path: str) -> str:
        tag = catalogue.by_id[item]
        prefix = PREFIXES[tag.namespace]
        select = path
        value = (
            f'<xsl:value-of select="$codes/c[@s=current()/{select}]"/>'
            if item == "taxItem"
            else f'<xsl:value-of select="{select}"/>'
        )
        return f'<xsl:if test="{select}"><{prefix}:{item}>{value}</{prefix}:{item}></xsl:if>'

    standard = [i for i in order if i in by_item and catalogue.by_id[i].kind == "standard"]
    extension = [i for i in order if i in by_item and catalogue.by_id[i].kind == "extension"]
    seizure = "".join(element(item, path) for path, item in group)
    first_seizure = order.index("seizureDate")
    before = [i for i in extension if order.index(i) < first_seizure]
    after = [i for i in extension if order.index(i) > first_seizure]
    text = f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
      xmlns:tn="{TN}" xmlns:svc="urn:renkei:platform:service:1" xmlns:x="urn:x"
      xmlns:std="urn:renkei:platform:standard:1" xmlns:ext="urn:renkei:platform:extension:1"
      xmlns:exsl="http://exslt.org/common" exclude-result-prefixes="tn x exsl">
      <xsl:variable name="table">{codes}</xsl:variable>
      <xsl:variable name="codes" select="exsl:node-set($table)"/>
      <xsl:template match="/tn:滞納処分通知">
        <svc:{SERVICE}>
          {"".join(element(i, by_item[i]) for i in standard)}
          <svc:Extension>
            {"".join(element(i, by_item[i]) for i in before)}
            <xsl:for-each select="tn:差押一覧/tn:差押">
              <ext:seizure>{seizure}</ext:seizure>
            </xsl:for-each>
            {"".join(element(i, by_item[i]) for i in after)}
          </svc:Extension>
        </svc:{SERVICE}>
      </xsl:template>
    </xsl:stylesheet>"""
    return etree.XSLT(etree.fromstring(text.encode()))


def rate(
    run: Callable[[bytes], bytes], documents: Sequence[bytes], count: int
) -> tuple[float, float]:
    """(per wall-clock second, per CPU second of this process), cycling through the corpus:
    on a shared machine the second is the per-core figure (time the process actually ran)."""
    size = len(documents)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(count):
        run(documents[index % size])
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="translations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--documents", type=int, default=1000, help="distinct documents")
    args = parser.parse_args()

    template, fields = document()
    documents = corpus(template, args.documents)
    data = documents[0]
    full = load_mapping(data_dir("mappings") / "tainou.yaml").sections[(SERVICE, "inbound")]
    singles, group = subset_entries()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "subset.yaml"
        path.write_text(subset_mapping(singles, group), encoding="utf-8")
        (Path(directory) / "tables").symlink_to(data_dir("mappings") / "tables")
        subset = load_mapping(path).sections[(SERVICE, "inbound")]
    xslt = stylesheet(singles, group)
    parser_ = etree.XMLParser(resolve_entities=False, no_network=True)

    def engine_full(document: bytes) -> bytes:
        result = full.translate(document).output
        assert result is not None
        return result

    def engine_subset(document: bytes) -> bytes:
        result = subset.translate(document).output
        assert result is not None
        return result

    def with_xslt(document: bytes) -> bytes:
        return etree.tostring(xslt(etree.fromstring(document, parser_)))

    for document_ in documents:
        ours = etree.fromstring(engine_subset(document_))
        theirs = etree.fromstring(with_xslt(document_))
        canonical = [
            etree.tostring(t, method="c14n2", strip_text=True)  # type: ignore[call-overload]
            for t in (ours, theirs)
        ]
        assert canonical[0] == canonical[1], "the engine subset and the XSLT disagree"

    best = {"full": (0.0, 0.0), "subset": (0.0, 0.0), "xslt": (0.0, 0.0)}
    for _ in range(args.rounds):
        for name, run in (("full", engine_full), ("subset", engine_subset), ("xslt", with_xslt)):
            wall, cpu = rate(run, documents, args.count)
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    print(f"python {platform.python_version()}, {platform.machine()}, lxml {etree.LXML_VERSION}")
    print(
        f"input: {len(documents)} distinct documents of {len(data)} bytes, {fields} leaf values; "
        f"subset: {len(singles)} fields + {len(group)} per 差押 record"
    )
    print("| translation | per wall second | per CPU second (one core) |")
    print("| --- | --- | --- |")
    for name, label in (
        ("full", "engine, full 滞納管理 mapping"),
        ("subset", "engine, copy/rename/code-table subset"),
        ("xslt", "lxml XSLT, same subset"),
    ):
        print(f"| {label} | {best[name][0]:,.0f} | {best[name][1]:,.0f} |")
    ratio_wall = best["subset"][0] / best["xslt"][0]
    ratio_cpu = best["subset"][1] / best["xslt"][1]
    print(f"| engine subset ÷ XSLT | {ratio_wall:.2f}× | {ratio_cpu:.2f}× |")


if __name__ == "__main__":
    main()
