"""Small mapping files the mapping tests start from and vary."""

from __future__ import annotations

# an XML vendor format with three items of 国保資格異動通知
HEAD = """\
system: vendor
namespaces: {v: "urn:example:vendor"}
services:
  NhiEligibilityNotice:
    inbound:
      format: xml
      root: v:R
      fields:
        - {to: localGovernmentCode, from: v:lg}
        - {to: addresseeNumber, from: v:a}
        - {to: insuredNumber, from: v:no}
"""

# the same items from a JSON document
JSON_HEAD = """\
system: kokuho
services:
  NhiEligibilityNotice:
    inbound:
      format: json
      fields:
        - {to: localGovernmentCode, from: lg, required: true}
        - {to: addresseeNumber, from: atena}
        - {to: insuredNumber, from: "no", required: true}
"""
