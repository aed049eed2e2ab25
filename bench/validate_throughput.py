"""Validation throughput: renkei's validator side by side with raw lxml in the same run.

The baseline is what any lxml user would write: ``etree.fromstring`` + ``XMLSchema.validate``
on the same documents with the same compiled schema. renkei adds the secure parse, the SOAP /
canonical handling, finding mapping and the domain rules. Rounds alternate between the two so
machine noise hits both; the best round of each is reported.

Run: ``.venv/bin/python bench/validate_throughput.py`` (add ``taskset -c 0`` to pin one core).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

from lxml import etree

from bus.samplegen.messages import generate_corpus
from bus.validation.schema import SchemaValidator, load_schema
from bus.validation.secure_parse import secure_parse
from bus.validation.validator import Validator


def _round(check: Callable[[bytes], object], corpus: list[bytes]) -> float:
    start = time.perf_counter()
    for document in corpus:
        check(document)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="documents per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    corpus = generate_corpus(args.count, seed=args.seed)
    schema = load_schema()
    validator = Validator()
    assert all(validator.validate(d).valid for d in corpus), "the corpus must be valid"
    assert all(schema.validate(etree.fromstring(d)) for d in corpus)

    def raw_lxml(document: bytes) -> bool:
        return schema.validate(etree.fromstring(document))

    methods: dict[str, Callable[[bytes], object]] = {
        "raw lxml (fromstring + XSD)": raw_lxml,
        "renkei validator (secure parse + XSD + rules)": validator.validate,
    }
    timings: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, check in methods.items():
            timings[name].append(_round(check, corpus))

    total_bytes = sum(len(d) for d in corpus)
    sizes = sorted(len(d) for d in corpus)
    print(
        f"python {platform.python_version()}, lxml {etree.__version__}, "
        f"libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}"
    )
    print(
        f"{args.count} documents (13 message types), median {statistics.median(sizes)} B, "
        f"mean {total_bytes / len(corpus):.0f} B; best of {args.rounds} rounds\n"
    )
    print("| method | docs/s | MB/s | µs/doc |")
    print("| --- | ---: | ---: | ---: |")
    best = {name: min(times) for name, times in timings.items()}
    for name, seconds in best.items():
        print(
            f"| {name} | {args.count / seconds:,.0f} | {total_bytes / seconds / 1e6:.1f} | "
            f"{seconds / args.count * 1e6:.1f} |"
        )
    baseline, renkei = best.values()
    print(f"\nratio renkei / raw lxml: {baseline / renkei:.2f}x (target >= 0.60x)")
    _by_size(corpus, raw_lxml, validator.validate, args.rounds)
    _breakdown(corpus, validator, args.rounds)


def _by_size(
    corpus: list[bytes],
    raw: Callable[[bytes], object],
    renkei: Callable[[bytes], object],
    rounds: int,
) -> None:
    """Per-document overhead is roughly constant, so the ratio depends on message size."""
    print("\n| size band | docs | raw lxml µs/doc | renkei µs/doc | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for low, high in ((0, 2000), (2000, 3500), (3500, 1 << 30)):
        band = [d for d in corpus if low <= len(d) < high]
        if not band:
            continue
        raw_s = min(_round(raw, band) for _ in range(rounds))
        renkei_s = min(_round(renkei, band) for _ in range(rounds))
        label = f"{low}–{high} B" if high < 1 << 30 else f">= {low} B"
        print(
            f"| {label} | {len(band)} | {raw_s / len(band) * 1e6:.1f} | "
            f"{renkei_s / len(band) * 1e6:.1f} | {raw_s / renkei_s:.2f}x |"
        )


def _breakdown(corpus: list[bytes], validator: Validator, rounds: int) -> None:
    """Cumulative cost of the validator's steps on fresh trees (where the time goes)."""
    schema_validator = SchemaValidator(validator.catalogue)

    def secure(d: bytes) -> object:
        return secure_parse(d).root

    def xsd(d: bytes) -> object:
        root = secure_parse(d).root
        assert root is not None
        return schema_validator.validate(root)

    steps: dict[str, Callable[[bytes], object]] = {
        "secure parse": secure,
        "+ XSD and finding mapping": xsd,
        "+ domain rules, envelope (= validate)": validator.validate,
    }
    print("\n| cumulative step | µs/doc |")
    print("| --- | ---: |")
    for name, step in steps.items():
        seconds = min(_round(step, corpus) for _ in range(rounds))
        print(f"| {name} | {seconds / len(corpus) * 1e6:.1f} |")


if __name__ == "__main__":
    main()
