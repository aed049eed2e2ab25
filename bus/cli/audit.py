"""``renkei audit keygen / checkpoint / verify / admin``: the tamper-evident audit trail
(監査記録)."""

from __future__ import annotations

import json
from pathlib import Path
from time import monotonic
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from bus.cli import options
from bus.cli.store import EXIT_FAILED, JsonOption, TenantOption, _fail, _json, _store, audit_app
from bus.errors import make_finding
from bus.settings import Settings
from bus.store.admin_audit import admin_records
from bus.store.audit import utc
from bus.store.audit_verify import ChainVerdict, verify_audit
from bus.store.checkpoints import (
    CheckpointError,
    anchor_document,
    generate_key,
    load_signing_key,
    load_verify_key,
    write_anchor,
    write_checkpoints,
)
from bus.store.db import read_snapshot

FromOption = Annotated[
    str | None, typer.Option("--from", help="Records stamped at or after (ISO, or a 和暦 day).")
]
ToOption = Annotated[
    str | None, typer.Option("--to", help="Records stamped at or before (a day: to its end).")
]
#: Seconds between two progress lines of ``audit verify``.
PROGRESS_EVERY_S = 2.0

AnchorOption = Annotated[
    Path | None,
    typer.Option("--anchor", help="Anchor directory (default: RENKEI_AUDIT_ANCHOR_DIR)."),
]


def _key_problem(path: Path, error: Exception) -> typer.Exit:
    """A key file that is there but cannot be used (RK-AUD004, with the reason)."""
    finding = make_finding("RK-AUD004", path="/", actual=str(path), detail=str(error))
    typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en} ({error})", err=True)
    return typer.Exit(EXIT_FAILED)


@audit_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Private key file to create (PEM).")],
) -> None:
    """Create the Ed25519 key that signs checkpoints (never overwrites); prints the public
    key's path (give it to whoever verifies)."""
    try:
        public = generate_key(out)
    except CheckpointError as error:
        raise _key_problem(out, error) from None
    typer.echo(f"private key: {out} (mode 0600; RENKEI_AUDIT_SIGNING_KEY)\npublic key: {public}")


@audit_app.command("checkpoint")
def checkpoint(anchor: AnchorOption = None, as_json: JsonOption = False) -> None:
    """Sign the head of every chain that moved since its last checkpoint; store it in the
    database and as one new file per checkpoint in the anchor directory."""
    settings = Settings()
    anchor = anchor or settings.audit_anchor_dir
    if settings.audit_signing_key is None:
        raise _fail(make_finding("RK-AUD007", path="/"))
    try:
        key = load_signing_key(settings.audit_signing_key)
    except CheckpointError as error:
        raise _key_problem(settings.audit_signing_key, error) from None
    with _store() as store:
        with store.sessions.begin() as session:
            documents = [anchor_document(c) for c in write_checkpoints(session, key)]
        written = [(str(d["chain"]), int(d["seq"])) for d in documents]
        files = []
        if anchor is not None:  # after the commit: an anchor file always has its row
            for document in documents:
                try:
                    files.append(str(write_anchor(anchor, document)))
                except (CheckpointError, OSError) as error:
                    finding = make_finding("RK-AUD005", path="/", actual=str(anchor))
                    typer.echo(f"{finding.code} {finding.message_ja} ({error})", err=True)
                    raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        _json({"checkpoints": [{"chain": c, "seq": s} for c, s in written], "files": files})
        return
    for chain, seq in written:
        typer.echo(f"checkpoint {chain} seq {seq}")
    if not written:
        typer.echo("no chain moved since its last checkpoint")


@audit_app.command("verify")
def verify(
    tenant: TenantOption = None,
    start: FromOption = None,
    end: ToOption = None,
    anchor: AnchorOption = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Public (or private) key PEM that signed.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute the hash chains, check the signed checkpoints and (``--anchor``) the anchor
    directory; report each chain's first broken link; exit 1 when one is broken."""
    since, until = options.moment(start, "--from"), options.moment(end, "--to", end=True)
    settings = Settings()
    key_path = key or settings.audit_signing_key
    verify_key: Ed25519PublicKey | None = None
    if key_path is not None:
        try:
            verify_key = load_verify_key(key_path)
        except CheckpointError as error:
            raise _key_problem(key_path, error) from None
    anchor = anchor or settings.audit_anchor_dir
    if anchor is not None and verify_key is None:  # an anchor file is only as good as its signature
        raise options.usage_error(make_finding("RK-AUD006", path="--key"), "--key")
    # a snapshot without the write lock: minutes of reading never hold the hub's writers back
    with _store() as store, read_snapshot(store.sessions) as session:
        verdicts = verify_audit(
            session,
            chains=[tenant] if tenant else None,
            start=since,
            end=until,
            key=verify_key,
            anchor=anchor,
            progress=_ProgressLines(),
        )
    if as_json:
        _json({v.chain: _verdict_dict(v) for v in verdicts})
    else:
        _print_verdicts(verdicts, signed=verify_key is not None)
    if not all(verdict.ok for verdict in verdicts):
        raise typer.Exit(EXIT_FAILED)


class _ProgressLines:
    """A line on standard error every few seconds of a long verification (stdout keeps the
    verdicts): five years of a town's chain take minutes."""

    def __init__(self) -> None:
        self._last = monotonic()

    def __call__(self, chain: str, seq: int, head: int) -> None:
        if monotonic() - self._last < PROGRESS_EVERY_S:
            return
        self._last = monotonic()
        share = f" ({100 * seq // head}%)" if head >= seq > 0 else ""
        typer.echo(f"検証中 verifying {chain}: seq {seq:,} / {head:,}{share}", err=True)


def _verdict_dict(verdict: ChainVerdict) -> dict[str, Any]:
    first = verdict.first_break
    return {
        "ok": verdict.ok,
        "records": verdict.records,
        "checkpoints": verdict.checkpoints,
        "anchored": verdict.anchored,
        "first_bad_seq": first.seq if first else None,
        "code": first.code if first else None,
        "reason": first.reason if first else None,
    }


def _print_verdicts(verdicts: list[ChainVerdict], *, signed: bool) -> None:
    console = Console(soft_wrap=True)  # a line per verdict, also in a file or a pipe
    for verdict in verdicts:
        counts = f"{verdict.records} record(s), {verdict.checkpoints} checkpoint(s)"
        first = verdict.first_break
        if first is None:
            console.print(f"[green]OK[/]  {verdict.chain}  {counts}", highlight=False)
            continue
        finding = make_finding(first.code, path="/", actual=verdict.chain, expected=first.seq)
        console.print(
            f"[red]NG[/]  {verdict.chain}  {finding.code} {finding.message_ja}\n"
            f"    {finding.message_en} ({first.reason})",
            highlight=False,
        )
    if not signed:
        console.print("署名は検証していません（鍵なし） / signatures not checked (no key)")


@audit_app.command("admin")
def admin(
    action: Annotated[
        str | None,
        typer.Option("--action", help="An action (user.add) or an area (console, user, key)."),
    ] = None,
    start: FromOption = None,
    end: ToOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The latest N records.")] = 100,
    tenant: TenantOption = None,
    resident: Annotated[
        str | None,
        typer.Option(
            "--resident",
            help="Only look-ups of this 宛名番号 (with --tenant; matched by its keyed pseudonym).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the admin chain (管理操作・ログインの記録): who did what, when; console logins,
    logouts and session ends with the client address (``--action console``); who looked a
    resident up (``--tenant T --resident 宛名番号``: message.trail and message.search)."""
    since, until = options.moment(start, "--from"), options.moment(end, "--to", end=True)
    looked_up = _resident_key(tenant, resident) if resident is not None else None
    with _store() as store, store.sessions() as session:
        rows = [
            {
                "seq": row.seq,
                "at": utc(row.at).isoformat(),
                "action": row.event,
                "actor": row.actor,
                "detail": row.detail,
            }
            for row in admin_records(
                session,
                since=since,
                until=until,
                action=action,
                limit=limit,
                resident=looked_up,
            )
        ]
    if as_json:
        _json({"records": rows})
        return
    for row in rows:
        detail = json.dumps(row["detail"], ensure_ascii=False, sort_keys=True)
        typer.echo(f"{row['seq']}  {row['at']}  {row['action']}  {row['actor'] or '-'}  {detail}")
    if not rows:
        typer.echo("no admin records")


def _resident_key(tenant: str | None, resident: str) -> tuple[str, str]:
    """(tenant, the keyed pseudonym a look-up of ``resident`` was recorded under), computed
    with the hub's key (the auditor never handles the key or the HMAC); RK-AUD008 without
    ``--tenant``, RK-TEN001 / RK-STO010 (masked) for a malformed value."""
    from bus.store.queries import StoreQueryError
    from bus.store.trail import check_lookup, resident_key
    from bus.store.trail_report import pseudonym_key

    if tenant is None:
        raise options.usage_error(make_finding("RK-AUD008", path="--tenant"), "--tenant")
    try:
        check_lookup(tenant, resident)
    except StoreQueryError as error:
        raise options.usage_error(error.finding, error.finding.path) from None
    return tenant, resident_key(tenant, resident, pseudonym_key(Settings()))
