"""The cost of 項目制限 on egress: :func:`bus.protection.limits.limited_body` per delivery,
beside the secure parse of the same body (the baseline, same run).

Run: ``.venv/bin/python bench/limits_cost.py`` (best of 5 rounds of 5,000 calls each).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from pathlib import Path

from bus.config.models import FieldLimits, System
from bus.protection.limits import limited_body
from bus.validation.secure_parse import secure_parse

BODY = (
    Path(__file__).resolve().parents[1]
    / "samples"
    / "messages"
    / "ResidentChangeNotice"
    / "valid-full.xml"
).read_bytes()
ENTITLED = System(id="zeimu", name="税務", fields=FieldLimits(my_number=True))
NOT_ENTITLED = System(id="houmu", name="法務局")
DENY_ADDRESS = System(
    id="shuno", name="収納", fields=FieldLimits(my_number=True, deny=("address",))
)
CASES: dict[str, Callable[[], object]] = {
    "entitled to everything (no-op)": lambda: limited_body(ENTITLED, BODY),
    "個人番号 withheld": lambda: limited_body(NOT_ENTITLED, BODY),
    "deny [address]": lambda: limited_body(DENY_ADDRESS, BODY),
    "baseline: secure_parse alone": lambda: secure_parse(BODY),
}


def main(number: int = 5000) -> None:
    for label, call in CASES.items():
        best = min(timeit.repeat(call, number=number, repeat=5)) / number
        print(f"{label:34} {best * 1e6:8.1f} µs/message")


if __name__ == "__main__":
    main()
