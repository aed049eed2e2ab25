"""A hub serving three onboarded towns, each with its own systems holding real credentials
(issued API keys, a WS-Security secret): what the isolation matrix and the security HTTP
tests attack. Towns are onboarded with :func:`bus.security.tenancy.onboard` itself.
Systems defined outside ``systems.yaml`` (the towns' own, ``extra_files``) keep their
endpoints: the hub's shared receiver stands in only for the sample systems."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.config.loader import parse_config_files, read_config_files
from bus.security.api_keys import issue_key
from bus.security.secret_box import SecretBox
from bus.security.tenancy import onboard
from bus.security.wsse import set_soap_secret
from bus.settings import Settings
from bus.store.db import open_store
from tests.support.hub_server import HubServer, hub_server, sample, serialize
from tests.support.receivers import SAMPLE_CONFIG_DIR, Receiver

TOWNS = {"412015": "佐賀市", "412023": "唐津市", "412031": "鳥栖市"}
TEMPLATE = Path(__file__).with_name("isolation_town.yaml")
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)


@dataclass
class Towns:
    hub: HubServer
    settings: Settings  # the hub's store (to issue credentials and look at rows)
    keys: dict[str, str] = field(default_factory=dict)  # system → API key
    soap_passwords: dict[str, str] = field(default_factory=dict)  # system → password
    receivers: dict[str, Receiver] = field(default_factory=dict)  # system → its own endpoint

    def bearer(self, system: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[system]}"}


def town_config(
    tmp: Path,
    edit: Callable[[str], str] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """The sample configuration plus ``extra_files`` with the three towns onboarded;
    ``edit`` then rewrites each onboarded file (e.g. to give a town's system a rate limit;
    it may name another town's systems: all are onboarded by then)."""
    files = {**read_config_files(SAMPLE_CONFIG_DIR), **(extra_files or {})}
    onboarded: list[str] = []
    for code, name in TOWNS.items():
        town = onboard(files, code, name, TEMPLATE)
        files, onboarded = town.files, [*onboarded, town.path]
    if edit is not None:
        files |= {path: edit(files[path]) for path in onboarded}
    parse_config_files(files)  # the edits keep the configuration valid
    directory = tmp / "towns-config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    for path, text in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(text, encoding="utf-8")
    return directory


@contextmanager
def towns_hub(
    tmp: Path,
    database_url: str | None = None,
    edit: Callable[[str], str] | None = None,
    *,
    extra_files: Mapping[str, str] | None = None,
    keyed: tuple[str, ...] = ("juki", "zeimu"),
) -> Iterator[Towns]:
    """The hub on the towns' configuration; ``<k>-<code>`` gets an issued API key for each
    prefix ``k`` in ``keyed``, ``juki-<code>`` a UsernameToken secret too."""
    secrets_key = base64.b64encode(secrets.token_bytes(32)).decode()
    env = {"RENKEI_SECRETS_KEY": secrets_key}
    if database_url:
        env["RENKEI_DATABASE_URL"] = database_url
    config = town_config(tmp, edit, extra_files)
    with hub_server(tmp, env=env, config_source=config, loopback=False) as hub:
        settings = Settings(
            data_dir=tmp / "hub-data", database_url=database_url, secrets_key=secrets_key
        )
        towns = Towns(hub, settings)
        store = open_store(settings)
        box = SecretBox.from_settings(settings)
        try:
            for code in TOWNS:
                for system in (f"{prefix}-{code}" for prefix in keyed):
                    towns.keys[system] = issue_key(store.sessions, system).key
                _, towns.soap_passwords[f"juki-{code}"] = set_soap_secret(
                    store.sessions, box, f"juki-{code}"
                )
        finally:
            store.close()
        yield towns


def message(service: str, tenant: str, system: str) -> etree._Element:
    """A sample message with a fresh id, sent by ``system`` for ``tenant`` (Header and every
    団体コード in the body)."""
    document = sample(service)
    header_client = document.find(f".//{{{NS_ENVELOPE}}}client")
    assert header_client is not None
    header_client.find(f"{{{NS_ENVELOPE}}}tenant").text = tenant  # type: ignore[union-attr]
    header_client.find(f"{{{NS_ENVELOPE}}}system").text = system  # type: ignore[union-attr]
    for code in document.iter(f"{{{NS_STANDARD}}}localGovernmentCode"):
        code.text = tenant
    return document


def message_id(document: etree._Element) -> str:
    return document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""


def soap_with_token(
    document: etree._Element,
    username: str,
    password: str,
    *,
    created: datetime | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """The SOAP 1.1 form with a wsse:Security UsernameToken (PasswordDigest), built here
    independently of the hub's code: Base64(SHA-1(nonce + created + password))."""
    nonce = nonce or secrets.token_bytes(16)
    stamp = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + stamp.encode() + password.encode()).digest())
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP})
    header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
    security = etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
    token = etree.SubElement(security, f"{{{WSSE}}}UsernameToken")
    etree.SubElement(token, f"{{{WSSE}}}Username").text = username
    etree.SubElement(token, f"{{{WSSE}}}Password", Type=DIGEST_TYPE).text = digest.decode()
    etree.SubElement(token, f"{{{WSSE}}}Nonce").text = base64.b64encode(nonce).decode()
    etree.SubElement(token, f"{{{WSU}}}Created").text = stamp
    platform_header, service = etree.fromstring(serialize(document))
    header.append(platform_header)
    etree.SubElement(envelope, f"{{{SOAP}}}Body").append(service)
    return serialize(envelope)


def unknown_id() -> str:
    return str(uuid.uuid4())
