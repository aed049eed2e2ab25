"""The WSDL of each service, rendered from one template (schemas/wsdl/service.wsdl).

The template imports the real XSDs (served at ``/schemas/…``) instead of copying types, so
the WSDL carries exactly the standard types and their Japanese annotations. Rendering is a
string substitution, cached per (service, base URL): no per-request WSDL or schema building.
"""

from __future__ import annotations

from functools import cache, lru_cache
from string import Template
from xml.sax.saxutils import escape, quoteattr

from bus.catalogue import NS_SERVICE, XS
from bus.config.loader import REPLY_SUFFIX, is_inquiry
from bus.resources import schemas_dir
from bus.samplegen.content_model import content_model

TEMPLATE = "wsdl/service.wsdl"
ACKNOWLEDGEMENT = "rks:Acknowledgement"
_REPLY_HEADER = '\n        <soap:header message="tns:Header" part="Header" use="literal"/>'


@cache
def _template() -> Template:
    return Template((schemas_dir() / TEMPLATE).read_text(encoding="utf-8"))


def _titles(service: str) -> tuple[str, str]:
    """The service element's own ja/en documentation in its XSD."""
    declaration = content_model().elements[f"{{{NS_SERVICE}}}{service}"]
    titles = {
        node.get("{http://www.w3.org/XML/1998/namespace}lang"): (node.text or "").strip()
        for node in declaration.iterfind(f"{{{XS}}}annotation/{{{XS}}}documentation")
    }
    return titles.get("ja", service), titles.get("en", service)


def output_element(service: str) -> str:
    """What the operation answers: an inquiry its reply element, a notification the
    hub's acknowledgement."""
    return f"svc:{service}{REPLY_SUFFIX}" if is_inquiry(service) else ACKNOWLEDGEMENT


@lru_cache(maxsize=256)  # bounded: the base URL may come from the caller's Host header
def render_wsdl(service: str, base_url: str) -> bytes:
    """The WSDL of ``service`` (a known request service) for callers reaching the hub at
    ``base_url`` (no trailing slash)."""
    title_ja, title_en = _titles(service)
    address = f"{base_url}/soap/{service}"
    text = _template().substitute(
        service=service,
        title_ja=escape(title_ja),
        title_en=escape(title_en),
        schemas=quoteattr(f"{base_url}/schemas")[1:-1],
        address=quoteattr(address)[1:-1],
        output_element=output_element(service),
        output_header=_REPLY_HEADER if is_inquiry(service) else "",
    )
    return text.encode("utf-8")
