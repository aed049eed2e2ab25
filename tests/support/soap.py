"""Reading a SOAP 1.1 Fault as the tests check it."""

from __future__ import annotations

import httpx
from lxml import etree

from adapters.soap.envelope import NS_SOAP_BINDING, SOAP11


def fault_codes(response: httpx.Response) -> tuple[str, list[str]]:
    """The Fault's faultcode and the RK codes of the findings in its detail."""
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault")
    assert fault is not None, response.text
    codes = [e.text or "" for e in fault.iter(f"{{{NS_SOAP_BINDING}}}code")]
    return fault.findtext("faultcode") or "", codes
