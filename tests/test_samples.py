"""The shipped samples validate as their names say, and are exactly what the generator makes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from bus.catalogue import NS_ENVELOPE, load_catalogue
from bus.samplegen.content_model import content_model
from bus.samplegen.messages import generate_corpus
from bus.samplegen.sample_set import write_sample_set
from bus.samplegen.values import TOWNS
from bus.validation.validator import Validator

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "messages"
ALL_SAMPLES = sorted(SAMPLES.rglob("*.xml"))
CODE = re.compile(r"RK-[A-Z]{2,4}[0-9]{3}")


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sample_validates_as_its_name_says(validator: Validator, path: Path) -> None:
    report = validator.validate(path.read_bytes())
    codes = {finding.code for finding in report.findings}
    named = CODE.search(path.stem)
    if path.stem.startswith("invalid-"):
        assert named is not None
        assert not report.valid
        assert codes == {named.group()}, "an invalid sample breaks exactly one named rule"
    elif path.stem.startswith("valid-warning-"):
        assert named is not None
        assert report.valid
        assert codes == {named.group()}
    else:
        assert path.stem.startswith("valid-")
        assert report.valid and codes == set(), [f.message_en for f in report.findings]


def test_every_service_has_valid_and_several_invalid_samples() -> None:
    for service in content_model().services():
        names = [p.stem for p in (SAMPLES / service).glob("*.xml")]
        assert {"valid-full", "valid-minimal"} <= set(names), service
        assert sum(n.startswith("invalid-") for n in names) >= 3, service


def test_headers_name_the_pilot_towns() -> None:
    towns = {town.code for town in TOWNS}
    seen = set()
    for path in ALL_SAMPLES:
        tenant = etree.parse(str(path)).find(f".//{{{NS_ENVELOPE}}}client/{{{NS_ENVELOPE}}}tenant")
        assert tenant is not None and tenant.text in towns, path
        seen.add(tenant.text)
    assert seen == towns


def test_committed_samples_are_what_the_generator_makes(tmp_path: Path) -> None:
    written = write_sample_set(tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in written) == sorted(
        p.relative_to(SAMPLES) for p in ALL_SAMPLES
    ), "run `renkei samples generate` and commit the result"
    for path in written:
        assert path.read_bytes() == (SAMPLES / path.relative_to(tmp_path)).read_bytes(), path


def test_generated_corpus_is_valid_and_covers_every_item(validator: Validator) -> None:
    corpus = generate_corpus(60, seed=7)
    seen: set[str] = set()
    for document in corpus:
        report = validator.validate(document)
        assert report.valid and not report.findings, [f.message_en for f in report.findings]
        seen |= {element.tag for element in etree.fromstring(document).iter()}
    catalogue = load_catalogue()
    assert {item.tag for item in catalogue.catalogue_items()} <= seen
    sizes = sorted(len(document) for document in corpus)
    assert sizes[len(sizes) // 2] > 1500


def test_corpus_is_deterministic_per_seed() -> None:
    assert generate_corpus(5, seed=3) == generate_corpus(5, seed=3)
    assert generate_corpus(5, seed=3) != generate_corpus(5, seed=4)
