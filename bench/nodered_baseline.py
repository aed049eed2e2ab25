"""Node-RED as the baseline of bench/soap_throughput.py: a flow doing what an integrator
builds in a flow tool — ``http in`` → ``xml`` (parse) → ``switch`` on 異動事由 (content-based
route, 転出/死亡/転居 forwarded) → ``http request`` to the subscriber → ``http response``.

Node-RED comes from npm (``bench/nodered/package.json``; ``npm ci`` there once). The switch
matches xml2js's *prefixed* keys (``soap:Envelope``, ``std:changeReason``), as such flows do:
the same message with other prefixes would silently take the other branch — the failure the
hub's routing on catalogue fields avoids.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

NODE_RED_DIR = Path(__file__).resolve().parent / "nodered"
NODE_RED = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"
_REASON = (
    'parsed["soap:Envelope"]["soap:Body"][0]["svc:ResidentChangeNotice"][0]["std:changeReason"][0]'
)
_ACK = (
    '<?xml version="1.0" encoding="UTF-8"?><soap:Envelope '
    'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><ack>accepted</ack>'
    "</soap:Body></soap:Envelope>"
)


def flow(path: str, subscriber_url: str) -> list[dict[str, object]]:
    """The flow: forwards 201/202/203/301 to ``subscriber_url``, acknowledges the rest."""
    tab = "renkei-bench"

    def node(
        node_id: str, kind: str, wires: list[list[str]], **config: object
    ) -> dict[str, object]:
        return {"id": node_id, "type": kind, "z": tab, "wires": wires, **config}

    text_xml = {"content-type": "text/xml; charset=utf-8"}
    return [
        {"id": tab, "type": "tab", "label": "renkei bench"},
        node("in", "http in", [["keep"]], url=path, method="post"),
        node(
            "keep",
            "change",
            [["parse"]],
            rules=[{"t": "set", "p": "parsed", "pt": "msg", "to": "payload", "tot": "msg"}],
        ),
        node("parse", "xml", [["route"]], property="parsed", attr="$", chr="_"),
        node(
            "route",
            "switch",
            [["forward_headers"], ["ack"]],
            property=_REASON,
            propertyType="msg",
            rules=[{"t": "regex", "v": "^(201|202|203|301)$", "case": False}, {"t": "else"}],
            checkall="false",
            outputs=2,
        ),
        node(
            "forward_headers",
            "change",
            [["forward"]],
            rules=[
                {"t": "delete", "p": "parsed", "pt": "msg"},
                {
                    "t": "set",
                    "p": "headers",
                    "pt": "msg",
                    "to": json.dumps(text_xml),
                    "tot": "json",
                },
            ],
        ),
        node("forward", "http request", [["ack"]], method="POST", ret="txt", url=subscriber_url),
        node(
            "ack",
            "change",
            [["out"]],
            rules=[
                {"t": "set", "p": "payload", "pt": "msg", "to": _ACK, "tot": "str"},
                {
                    "t": "set",
                    "p": "headers",
                    "pt": "msg",
                    "to": json.dumps(text_xml),
                    "tot": "json",
                },
                {"t": "set", "p": "statusCode", "pt": "msg", "to": "200", "tot": "num"},
            ],
        ),
        node("out", "http response", []),
    ]


_SETTINGS = """module.exports = {
  uiHost: "127.0.0.1",
  httpAdminRoot: false,
  flowFile: "flows.json",
  credentialSecret: false,
  diagnostics: { enabled: false },
  runtimeState: { enabled: false },
  logging: { console: { level: "warn", metrics: false, audit: false } },
};
"""


class NodeRed:
    """A Node-RED process with :func:`flow`, in its own user directory."""

    def __init__(self, directory: Path, port: int, path: str, subscriber_url: str) -> None:
        self.directory = directory
        self.port = port
        self.path = path
        self.subscriber_url = subscriber_url
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """Why Node-RED cannot run here, or None."""
        if shutil.which("node") is None:
            return "node is not installed"
        if not NODE_RED.exists():
            return f"Node-RED is not installed: run `npm ci` in {NODE_RED_DIR}"
        return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> NodeRed:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "settings.js").write_text(_SETTINGS)
        flows = flow(self.path, self.subscriber_url)
        (self.directory / "flows.json").write_text(json.dumps(flows, ensure_ascii=False))
        command = ["node", str(NODE_RED), "--userDir", str(self.directory), "--port"]
        command += [str(self.port), "--settings", str(self.directory / "settings.js")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=self.directory)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url, content=b"<x/>", timeout=2)  # answered once flows run
                return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("Node-RED did not start within 60 s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None
