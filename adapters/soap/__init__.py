"""SOAP adapter: renkei's own schema-first SOAP 1.1 handler on ASGI (lxml in, zeep out).

Inbound, one document/literal endpoint per service at ``/soap/{Service}``; its WSDL at
``/soap/{Service}?wsdl`` imports the real XSDs served at ``/schemas/…``.
"""
