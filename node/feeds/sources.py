"""Feeds: the platforms a node reads by itself, each page, poll or file taken in exactly once.

A feed is a transport (file inbox, HTTP paging, 前置库 polling) plus a profile.
Every batch — a file, an HTTP page, a poll of one table — is taken in within one
transaction together with the cursor that moves past it and a row in
feed_batches (or ingest_files) that records where its rows went. A crash at
any point either leaves the batch whole or not at all; the cursor says where to
start again.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from typing import Any

import asyncpg
import httpx

from credex.adapters.file_drop import Inbox
from credex.adapters.http_pull import HttpSource, PageUnavailable
from credex.adapters.profile import MappingContext, Profile, ProfileError
from credex.adapters.table_poll import TableSource, TableUnavailable, Watermark, open_read_only
from credex.adapters.tables import Row, object_row
from credex.node.cancellation import pause
from credex.node.config import FeedConfig, IngestConfig
from credex.node.feeds.files import Counts, IngestError, QuarantineKey, ingest_file, take_in_batch
from credex.node.feeds.mapping import RowMapper, map_rows
from credex.node.ledger import Ledger
from credex.node.store import Connection
from credex.node.store.database import RETRYABLE

log = logging.getLogger(__name__)
# A platform that does not answer, or answers nonsense, is tried again after a pause, like a lost database.
_RETRYABLE: tuple[type[BaseException], ...] = (*RETRYABLE, PageUnavailable, TableUnavailable, ProfileError)


class Feed(abc.ABC):
    def __init__(
        self,
        config: FeedConfig,
        pool: asyncpg.Pool,
        ledger: Ledger,
        context: MappingContext,
        ingest: IngestConfig,
    ) -> None:
        self.config = config
        self.name = config.name
        self.pool = pool
        self.ledger = ledger
        self.context = context
        self.ingest = ingest
        self.profile = Profile.load(config.profile)
        self.rows = RowMapper(self.profile, context)

    async def run(self) -> None:
        attempt = 0
        try:
            while True:
                try:
                    taken = await self.step()
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except _RETRYABLE as exc:
                    attempt += 1
                    log.error("feed %s: %s", self.name, exc)
                    await pause(min(60.0, self.config.poll_seconds * 2 ** min(attempt, 5)))
                    continue
                if not taken:
                    await pause(self.config.poll_seconds)
        finally:
            await self.close()

    async def close(self) -> None:
        """Release what the feed holds open to its platform (a client, a connection)."""
        return None

    @abc.abstractmethod
    async def step(self) -> int:
        """Take in what is waiting; return how many rows (0: nothing new)."""

    async def _cursor(self, conn: Connection, part: str) -> Any:
        value = await conn.fetchval("SELECT position FROM feed_cursors WHERE feed = $1 AND part = $2", self.name, part)
        return json.loads(value) if value is not None else None

    async def _commit_batch(self, rows: list[Row], part: str, locator: str, position: Any) -> Counts:
        """Map a page or poll and take it in, with the cursor moving past it, in one transaction."""
        batch = await asyncio.to_thread(map_rows, rows, f"{self.name}:{part}", self.rows)
        counts = Counts()
        async with self.pool.acquire() as conn, conn.transaction():
            batch_id = await conn.fetchval(
                "INSERT INTO feed_batches (feed, locator, rows_in, accepted, quarantined, new_records, corrected,"
                " unchanged) VALUES ($1, $2, 0, 0, 0, 0, 0, 0) RETURNING id",
                self.name,
                f"{part}@{locator}",
            )
            await take_in_batch(conn, self.ledger, batch, counts, QuarantineKey(feed_batch=batch_id))
            await conn.execute(
                "UPDATE feed_batches SET rows_in = $2, accepted = $3, quarantined = $4, new_records = $5,"
                " corrected = $6, unchanged = $7, first_seq = $8, last_seq = $9, revoked = $10,"
                " withdrawn_unknown = $11 WHERE id = $1",
                batch_id,
                counts.rows_in,
                counts.accepted,
                counts.quarantined,
                counts.new,
                counts.corrected,
                counts.unchanged,
                counts.first_seq,
                counts.last_seq,
                counts.revoked,
                counts.withdrawn_unknown,
            )
            await conn.execute(
                "INSERT INTO feed_cursors (feed, part, position) VALUES ($1, $2, $3)"
                " ON CONFLICT (feed, part) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
                self.name,
                part,
                json.dumps(position),
            )
        counts.count_in_metrics(self.ledger.origin)
        log.info(
            "feed %s %s: %d rows = %d accepted + %d quarantined (%d new, %d corrected)",
            self.name,
            part,
            counts.rows_in,
            counts.accepted,
            counts.quarantined,
            counts.new,
            counts.corrected,
        )
        return counts


class FileDropFeed(Feed):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.inbox is None:
            raise ValueError(f"feed {self.name}: a file_drop feed needs an inbox folder")
        self.inbox = Inbox(self.config.inbox, self.config.settle_seconds)
        self.inbox.ensure()

    async def step(self) -> int:
        taken = 0
        for path in await asyncio.to_thread(self.inbox.ready):
            log.info("feed %s: taking in %s", self.name, path.name)
            try:
                report = await ingest_file(
                    self.pool,
                    self.ledger,
                    self.profile,
                    self.context,
                    path,
                    batch_size=self.ingest.batch_size,
                    parallel_from_bytes=self.ingest.parallel_from_bytes,
                )
            except IngestError as exc:
                log.error("feed %s: %s", self.name, exc)
                await asyncio.to_thread(self.inbox.finish, path, False, {"file": path.name, "error": str(exc)})
                continue
            summary = {
                "file": path.name,
                "content_hash": report.content_hash,
                "profile": report.profile,
                "rows_in": report.rows_in,
                "accepted": report.accepted,
                "quarantined": report.quarantined,
                "new": report.new,
                "corrected": report.corrected,
                "unchanged": report.unchanged,
                "revoked": report.revoked,
                "withdrawn_unknown": report.withdrawn_unknown,
                "already_taken": report.already_taken,
                "reasons": dict(report.reasons),
            }
            await asyncio.to_thread(self.inbox.finish, path, True, summary)
            taken += report.rows_in
        return taken


class HttpFeed(Feed):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = HttpSource(
            url=self.config.url,
            page_size=self.config.page_size,
            timeout=self.config.timeout_seconds,
            attempts=self.config.attempts,
            headers=tuple(self.config.headers.items()),
        )
        # One client for the feed's life: its connections are kept alive between pages.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout_seconds))

    async def close(self) -> None:
        await self._client.aclose()

    async def step(self) -> int:
        async with self.pool.acquire() as conn:
            cursor = await self._cursor(conn, "api")
        page = await self.source.page(self._client, cursor)
        if not page.items:
            return 0
        if page.next_cursor is None:
            raise PageUnavailable(f"{self.config.url}: a page of items came without a next cursor")
        rows = [object_row(item, f"cursor {cursor or '(start)'} item {i + 1}") for i, item in enumerate(page.items)]
        counts = await self._commit_batch(rows, "api", str(cursor), page.next_cursor)
        return counts.rows_in


class TablePollFeed(Feed):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sources = [
            TableSource(table, self.config.update_column, self.config.id_column) for table in self.config.tables
        ]
        self._conn: asyncpg.Connection | None = None

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close(timeout=self.config.timeout_seconds)
        self._conn = None

    async def step(self) -> int:
        if self._conn is None or self._conn.is_closed():
            self._conn = await open_read_only(self.config.dsn, timeout=self.config.timeout_seconds)
        taken = 0
        for source in self.sources:
            async with self.pool.acquire() as conn:
                after = Watermark.from_json(await self._cursor(conn, source.table))
            found = await source.poll(self._conn, after, self.config.batch_size)
            if not found:
                continue
            rows = [object_row(item, f"{source.table} id {item.get(source.id_column)}") for item in found]
            position = source.watermark(found[-1]).to_json()
            counts = await self._commit_batch(rows, source.table, json.dumps(after.to_json()), position)
            taken += counts.rows_in
        return taken


def open_feed(
    config: FeedConfig, pool: asyncpg.Pool, ledger: Ledger, context: MappingContext, ingest: IngestConfig
) -> Feed:
    kinds: dict[str, type[Feed]] = {"file_drop": FileDropFeed, "http": HttpFeed, "table_poll": TablePollFeed}
    return kinds[config.transport](config, pool, ledger, context, ingest)
