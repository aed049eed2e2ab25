"""The ``file`` transport: deliveries for a file-linkage destination go into its outbound
folder's journal; the folder watcher writes them out as one batch file per interval."""

from adapters.file_out.transport import FileTransport

__all__ = ["FileTransport"]
