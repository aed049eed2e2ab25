"""When the TLS certificates ``renkei serve`` listens with stop being valid.

A hub runs for years; its server certificate (``--tls-cert``) and the CA its systems' client
certificates are checked against (``--tls-client-ca``) do not. On the day one expires every
caller's handshake fails, and nothing said so before. ``renkei serve`` therefore logs each
file's end of validity when it starts — a warning (RK-OPS014) within
:data:`WARN_BEFORE` or once expired — and passes the files to its HTTP processes, whose
``/metrics`` show ``renkei_tls_certificate_expiry_timestamp_seconds`` for an alert rule.
The files are read once, when the process starts: that is when uvicorn loaded them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from bus.errors import make_finding
from bus.observability.logs import get_logger

#: How ``renkei serve`` names its certificate files to its HTTP processes (JSON: role → path).
TLS_FILES_ENV = "RENKEI_TLS_CERTIFICATE_FILES"
WARN_BEFORE = timedelta(days=30)

log = get_logger(__name__)


def not_after(path: Path) -> datetime | None:
    """The end of validity of the certificate in ``path`` that ends first (a CA file may
    hold several; a key beside them is skipped); ``None`` when it cannot be read (uvicorn
    reports that file itself)."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    return min(certificate.not_valid_after_utc for certificate in certificates)


def expiries(files: Mapping[str, Path]) -> dict[str, datetime]:
    """Each readable file's end of validity, by its role (``server``, ``client_ca``)."""
    ends = {role: not_after(path) for role, path in files.items()}
    return {role: end for role, end in ends.items() if end is not None}


def log_expiries(files: Mapping[str, Path], now: datetime | None = None) -> None:
    """One event per certificate file: ``tls.certificate_valid`` (info) while it is valid for
    longer than :data:`WARN_BEFORE`, else ``tls.certificate_expiring``, the RK-OPS014
    warning (``days_left`` negative once expired)."""
    moment = now or datetime.now(UTC)
    for role, end in expiries(files).items():
        days_left = round((end - moment) / timedelta(days=1))
        fields = {
            "certificate": role,
            "file": str(files[role]),
            "valid_until": end.isoformat(),
            "days_left": days_left,
        }
        if end - moment > WARN_BEFORE:
            log.info("tls.certificate_valid", **fields)
            continue
        finding = make_finding(
            "RK-OPS014",
            path=str(files[role]),
            actual=f"{role} {files[role]}",
            expected=f"{end.isoformat()} ({days_left} days)",
        )
        log.warning(
            "tls.certificate_expiring", code=finding.code, message=finding.message_en, **fields
        )


def pass_to_http_processes(files: Mapping[str, Path]) -> None:
    """Name the files to the HTTP processes ``renkei serve`` starts (they inherit it)."""
    os.environ[TLS_FILES_ENV] = json.dumps({role: str(path) for role, path in files.items()})


class CertificateExpiryCollector:
    """``renkei_tls_certificate_expiry_timestamp_seconds{certificate}``: the end of validity
    (Unix time) of each file this process was started with; alert when it is 30 days away."""

    def __init__(self, ends: Mapping[str, datetime]) -> None:
        self._ends = dict(ends)

    @classmethod
    def from_environment(cls) -> CertificateExpiryCollector | None:
        named = os.environ.get(TLS_FILES_ENV)
        if not named:
            return None
        files = {role: Path(path) for role, path in json.loads(named).items()}
        return cls(expiries(files))

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "renkei_tls_certificate_expiry_timestamp_seconds",
            "End of validity (Unix time) of the TLS certificate files renkei serve listens with.",
            labels=["certificate"],
        )
        for role, end in sorted(self._ends.items()):
            gauge.add_metric([role], end.timestamp())
        yield gauge
