"""Inbound message validation: secure parse, XSD and domain rules."""
