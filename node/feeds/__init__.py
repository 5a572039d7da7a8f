"""Feeds: this node's own platform rows in.

Files, HTTP pages and 前置库 polls, mapped through a profile and appended to the ledger.
"""

from credex.node.feeds.files import FileReport, IngestError, ingest_file
from credex.node.feeds.mapping import Reader
from credex.node.feeds.sources import open_feed

__all__ = ["FileReport", "IngestError", "Reader", "ingest_file", "open_feed"]
