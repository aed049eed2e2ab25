"""The queue outbound transport (registered as ``queue`` under ``renkei.transports``)."""

from adapters.queue_out.transport import QueueTarget, QueueTransport

__all__ = ["QueueTarget", "QueueTransport"]
