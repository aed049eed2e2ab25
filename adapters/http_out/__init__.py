"""The HTTP outbound transport (registered as ``http`` under ``renkei.transports``)."""

from adapters.http_out.transport import HttpTransport, retry_after_seconds

__all__ = ["HttpTransport", "retry_after_seconds"]
