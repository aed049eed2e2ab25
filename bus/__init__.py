"""renkei core: the one ingest pipeline, the standard message set and its validator."""

__version__ = "0.1.0"
