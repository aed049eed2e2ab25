"""PULL feeds (差分 and 全件): a connected system reads the messages it is entitled to, in
order, after an opaque cursor, instead of (or besides) having them pushed."""

from bus.feeds.cursor import Cursor, CursorError
from bus.feeds.entitlement import Entitlement, FeedRefused, entitlement
from bus.feeds.reader import FeedEntry, FeedGone, FeedPage, export_feed, read_feed

__all__ = [
    "Cursor",
    "CursorError",
    "Entitlement",
    "FeedEntry",
    "FeedGone",
    "FeedPage",
    "FeedRefused",
    "entitlement",
    "export_feed",
    "read_feed",
]
