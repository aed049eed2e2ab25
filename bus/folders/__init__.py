"""File linkage (ファイル連携): hot folders the hub watches for inbound files, and the batch
files it writes for file-linkage destinations (the ``file`` transport's journal, closed into
one file per interval)."""
