"""The SOAP outbound transport (registered as ``soap`` under ``renkei.transports``)."""

from adapters.soap_out.transport import SoapTransport

__all__ = ["SoapTransport"]
