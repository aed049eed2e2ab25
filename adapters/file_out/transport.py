"""A delivery is "delivered" once it is durably in the destination folder's journal
(bus/folders/spool.py); the batch file follows at the end of the interval."""

from __future__ import annotations

import logging

from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult
from bus.folders.paths import resolve_folder
from bus.folders.spool import append
from bus.settings import Settings

log = logging.getLogger(__name__)


class FileTransport:
    def __init__(self, settings: Settings | None = None) -> None:
        self._data_dir = (settings or Settings()).data_dir

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        if not endpoint.url:
            return SendResult(Outcome.PERMANENT, error="file endpoint without a folder")
        folder = resolve_folder(endpoint.url, self._data_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            append(folder, message.service, message.tenant, message.message_id, message.body)
        except OSError as error:  # a full disk or a missing mount: try again later
            log.warning("outbound folder %s: %s", folder, error.strerror)
            return SendResult(Outcome.RETRY, error=f"folder: {error.strerror}", reached=False)
        return SendResult(Outcome.DELIVERED)

    def close(self) -> None:
        """Nothing is held open between sends."""
