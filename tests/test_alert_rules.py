"""The sample Prometheus alert rules (samples/prometheus/renkei-alerts.yml) against what they
watch: every metric, label and label value a rule names is in a real ``/metrics`` scrape of a
running hub that met the situations the rules are about (a dead letter, a refused message, an
unreachable destination, a paused one, an import with bad lines, a TLS certificate); each
runbook link names a section of the docs; and, where ``promtool`` is installed (Debian
package ``prometheus``), ``promtool check rules`` and ``promtool test rules`` with the
synthetic series of renkei-alerts.test.yml (which alerts fire, and when)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from bus.hub import Hub
from bus.observability.cert_expiry import TLS_FILES_ENV
from bus.observability.disk_space import DiskSpaceCollector
from bus.observability.metrics import MULTIPROC_ENV, exposition
from bus.observability.readiness import ReadinessCollector
from bus.observability.routes import operations_router
from bus.observability.store_gauges import StoreCollector
from tests.support.asgi_thread import served_in_thread
from tests.support.hub_server import ROOT, hub_server, sample, serialize
from tests.support.receivers import wait_for

RULES = ROOT / "samples" / "prometheus" / "renkei-alerts.yml"
RULE_TESTS = ROOT / "samples" / "prometheus" / "renkei-alerts.test.yml"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool not installed (Debian: apt-get install prometheus)"
RENKEI = str(Path(sys.executable).parent / "renkei")
SERVICE = "ResidentChangeNotice"
XML = {"Content-Type": "application/xml"}

#: Series and labels Prometheus adds itself: the scrape's health and the target's labels.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}

Scrape = dict[str, list[dict[str, str]]]  # sample name -> label sets


# --- the rules, read as text (no PromQL parser in Python) ----------------------------------


def _alerts() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _selectors(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, the text inside its braces, possibly empty) for each series selector."""
    for match in re.finditer(r"\b([a-z_][a-z0-9_]*)\b(\{[^}]*\})?", expr):
        name = match.group(1)
        if not (name.startswith("renkei_") or name in PROMETHEUS_SERIES):
            continue
        yield name, (match.group(2) or "{}")[1:-1]


def _matchers(inside: str) -> list[tuple[str, str, str]]:
    return re.findall(r'([a-z_]+)\s*(=~|!=|!~|=)\s*"([^"]*)"', inside)


def _grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    return labels


def _template_labels(rule: dict[str, Any]) -> set[str]:
    text = " ".join(rule["annotations"].values())
    return set(re.findall(r"\$labels\.([a-z_]+)", text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = heading.strip().lower().replace("`", "")
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    """The anchors of a Markdown file's headings (not of ``#`` lines in code blocks)."""
    anchors, fenced = set(), False
    for line in document.read_text(encoding="utf-8").splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,6} ", line):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


# --- a real hub that met each situation ------------------------------------------------------


def _certificate(path: Path, days: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.example.lg.jp")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _parse(text: str) -> Scrape:
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(dict(s.labels))
    return samples


def _send(url: str, document: bytes, service: str = SERVICE) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/messages/{service}", content=document, headers=XML, timeout=30)


def _deliveries(text: str, outcome: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "renkei_deliveries_total" and s.labels["outcome"] == outcome
    )


def _pause(data_dir: Path, system: str) -> None:
    """What ``renkei destinations pause`` records (its row; the command is tested elsewhere
    and would cost a process start here)."""
    with sqlite3.connect(data_dir / "renkei.db") as db:
        db.execute(
            "INSERT INTO destination_states (system, paused, reason, changed_at)"
            " VALUES (?, 1, 'test', ?)",
            (system, datetime.now(UTC).isoformat(sep=" ")),
        )


def _import(environment: dict[str, str]) -> None:
    notices = ROOT / "samples" / "notices" / "traps-cp932.csv"  # 3 bad lines
    command = [RENKEI, "import", "notices", str(notices), "--tenant", "412066", "--jobs", "1"]
    subprocess.run(command, cwd=ROOT, env=environment, check=True, capture_output=True)


def _situations(tmp_path: Path) -> Scrape:
    """A real hub (uvicorn) and its receiver: a message delivered, one refused by the
    receiver (dead letter), one refused by the hub (RK-DOM002), an import of 登記済通知 with
    bad lines (its counters shared through PROMETHEUS_MULTIPROC_DIR), a TLS certificate
    file; then the receiver stops (the destinations become unreachable: retries, circuit-
    breaker holds, a queue) and one destination is paused. Its ``/metrics`` at the end."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    _certificate(tmp_path / "server.pem", days=20)
    shared = {
        MULTIPROC_ENV: str(metrics_dir),
        TLS_FILES_ENV: json.dumps({"server": str(tmp_path / "server.pem")}),
    }
    poison = sample(SERVICE)
    poison_id = poison.findtext(".//{*}messageId")
    assert poison_id is not None
    with hub_server(tmp_path, env=shared, receiver_args=("--fail-message-ids", poison_id)) as hub:
        assert _send(hub.url, serialize(sample(SERVICE))).status_code == 202
        assert _send(hub.url, serialize(poison)).status_code == 202
        refused = sample(SERVICE, "invalid-RK-DOM002-my-number-check-digit.xml")
        assert _send(hub.url, serialize(refused)).status_code == 422
        environment = {
            **os.environ,
            **shared,
            "RENKEI_DATA_DIR": str(tmp_path / "hub-data"),
            "RENKEI_CONFIG_DIR": str(hub.config_dir),
        }
        _import(environment)
        wait_for(lambda: _deliveries(_metrics(hub.url), "dead") > 0, timeout=30)
        hub.receiver.stop()
        _pause(tmp_path / "hub-data", "kokuho")
        other = "LevyNotice"  # another subject: the dead letter holds the first one's
        assert _send(hub.url, serialize(sample(other)), other).status_code == 202
        wait_for(lambda: _deliveries(_metrics(hub.url), "retry") > 0, timeout=30)
        return _parse(_metrics(hub.url))


def _metrics(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def _check_names_and_labels(scrape: Scrape) -> None:
    """Every selector's metric, every label it matches on (with the value, for ``=``), every
    label grouped on and every label an annotation prints is in the scrape."""
    for rule in _alerts():
        used: set[str] = set()
        for name, inside in _selectors(rule["expr"]):
            if name in PROMETHEUS_SERIES:
                continue
            assert name in scrape, f"{rule['alert']}: {name} is not in /metrics"
            used.add(name)
            for label, operator, value in _matchers(inside):
                values = {labels.get(label) for labels in scrape[name]}
                assert values - {None}, f"{rule['alert']}: {name} has no label {label}"
                if operator == "=":
                    assert value in values, f"{rule['alert']}: no {name}{{{label}={value!r}}}"
        exported = {label for name in used for labels in scrape[name] for label in labels}
        wanted = _grouping_labels(rule["expr"]) | _template_labels(rule)
        missing = wanted - exported - TARGET_LABELS
        assert not missing, f"{rule['alert']}: labels {missing} are not on its series"


# --- tests --------------------------------------------------------------------------------------


def test_each_rule_has_a_severity_a_japanese_text_and_a_runbook_that_exists() -> None:
    alerts = _alerts()
    assert len({rule["alert"] for rule in alerts}) == len(alerts)
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        for key in ("summary", "description"):
            text = rule["annotations"][key]
            assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text), (rule["alert"], key)
        document, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        path = ROOT / document
        assert path.is_file(), rule["alert"]
        assert not anchor or anchor in _anchors(path), (rule["alert"], anchor)


def test_the_operators_guide_lists_every_alert_with_links_that_resolve() -> None:
    guide = ROOT / "docs" / "operations.md"
    text = guide.read_text(encoding="utf-8")
    section = text.split("### アラート（Prometheus のルール）", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `(Renkei\w+)`", section, flags=re.MULTILINE))
    assert listed == {rule["alert"] for rule in _alerts()}
    for anchor in re.findall(r"\]\(#([^)]+)\)", section):
        assert anchor in _anchors(guide), anchor


@pytest.mark.slow
def test_every_metric_and_label_the_rules_use_is_in_a_real_scrape(tmp_path: Path) -> None:
    """A hub that met each situation the rules watch for (see :func:`_situations`)."""
    scrape = _situations(tmp_path)
    _check_names_and_labels(scrape)
    held = {labels["destination"] for labels in scrape["renkei_destination_held"]}
    assert held, "the circuit breaker held no destination"
    checks = {labels["check"] for labels in scrape["renkei_readiness_check"]}
    assert checks == {"database", "broker", "configuration", "dispatch"}


def test_every_metric_the_rules_use_is_declared_by_the_metrics_route(
    local_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The light sibling of the test above: ``/metrics`` of a hub in this process that has
    seen no traffic declares every family the rules read (``# TYPE`` lines, even without
    samples; the labels need the traffic above) and its readiness checks."""
    _certificate(tmp_path / "server.pem", days=400)
    monkeypatch.setenv(TLS_FILES_ENV, json.dumps({"server": str(tmp_path / "server.pem")}))
    app = FastAPI()
    app.include_router(operations_router())
    app.state.hub = local_hub
    with served_in_thread(app) as url:
        text = _metrics(url)
    declared = {family.name for family in text_string_to_metric_families(text)}
    for rule in _alerts():
        for name, _ in _selectors(rule["expr"]):
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert name in PROMETHEUS_SERIES or family in declared, (rule["alert"], name)
    checks = {labels["check"] for labels in _parse(text)["renkei_readiness_check"]}
    assert checks == {"database", "broker", "configuration"}  # no workers in local_hub
    for name in ("renkei_data_dir_free_bytes", "renkei_data_dir_size_bytes"):
        assert [labels for labels, _ in _values(text.encode(), name)] == [{}], name


def test_the_data_directory_s_disk_is_read_at_each_scrape(tmp_path: Path) -> None:
    """RenkeiDataDiskLow / RenkeiDataDiskFillingUp: the free and total bytes of the
    filesystem of RENKEI_DATA_DIR (``os.statvfs``, no node exporter needed); left out, not a
    failed scrape, when the folder cannot be read."""
    text = exposition([DiskSpaceCollector(tmp_path)])
    stats = os.statvfs(tmp_path)
    [(_, free)] = _values(text, "renkei_data_dir_free_bytes")
    [(_, size)] = _values(text, "renkei_data_dir_size_bytes")
    assert size == stats.f_blocks * stats.f_frsize
    assert 0 < free <= size
    assert abs(free - stats.f_bavail * stats.f_frsize) < 256 * 2**20  # others write meanwhile
    gone = _parse(exposition([DiskSpaceCollector(tmp_path / "gone")]).decode())
    assert "renkei_data_dir_free_bytes" not in gone and "renkei_data_dir_size_bytes" not in gone


def test_a_scrape_still_answers_when_the_store_does_not(local_hub: Hub, tmp_path: Path) -> None:
    """RenkeiDatabaseUnavailable needs a scrape while the store is down: the store's gauges
    are then left out (not a failed scrape, which would read as RenkeiHubDown) and
    ``renkei_readiness_check{check="database"}`` is 0."""
    local_hub.store.engine.dispose()  # no connection left open on the file
    (tmp_path / "data").rename(tmp_path / "gone")  # SQLite: "unable to open database file"
    store = StoreCollector(local_hub.store.sessions)
    text = exposition([store, ReadinessCollector(local_hub)])
    samples = _parse(text.decode())
    assert "renkei_queue_depth" not in samples
    checks = {labels["check"]: value for labels, value in _values(text, "renkei_readiness_check")}
    assert checks["database"] == 0 and checks["broker"] == 1


def _values(text: bytes, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == name
    ]


def require_promtool() -> str:
    """promtool, or skip (fail under RENKEI_REQUIRE_SERVICES=1: .ci/run installs it) with
    the reason, as the browser tests do with chromium."""
    if PROMTOOL is None:
        if os.environ.get("RENKEI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RENKEI_REQUIRE_SERVICES=1 but {NO_PROMTOOL}")
        pytest.skip(NO_PROMTOOL)
    return PROMTOOL


def test_promtool_checks_the_rules_and_their_unit_tests_pass(tmp_path: Path) -> None:
    """``promtool check rules``, and ``promtool test rules`` on the unit tests that span
    an hour at most (those that wait out hours or a day-long ``for:`` are left to the slow
    sibling)."""
    promtool = require_promtool()
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    tests["rule_files"] = [str(RULES)]
    tests["tests"] = [test for test in tests["tests"] if _hours(test) <= 1]
    assert len(tests["tests"]) >= 10
    light = tmp_path / "renkei-alerts.light.test.yml"
    light.write_text(yaml.safe_dump(tests, allow_unicode=True), encoding="utf-8")
    _promtool_test(light)


@pytest.mark.slow
def test_promtool_runs_every_unit_test_of_the_rules() -> None:
    _promtool_test(RULE_TESTS)


def _hours(test: dict[str, Any]) -> float:
    """The latest evaluation time of a promtool unit test, in hours."""
    units = {"d": 24.0, "h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    times = [case["eval_time"] for case in test["alert_rule_test"]]
    return max(int(t[:-1]) * units[t[-1]] for t in times)


def _promtool_test(path: Path) -> None:
    tested = subprocess.run(
        [require_promtool(), "test", "rules", path.name], cwd=path.parent, capture_output=True
    )
    assert tested.returncode == 0, tested.stdout.decode() + tested.stderr.decode()
