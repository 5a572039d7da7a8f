"""The audit trail of every gRPC call, written with group commit.

Every answer waits until its audit entry is committed: no trail, no answer. To
keep that cheap under load, entries queue up while a write is in flight and the
next write takes all of them in one COPY, so the cost per call falls as load
rises. A couple of writers run at once: the next batch is taken and sent while
the one before it commits, so a call waits for about one commit, not for the
commit in progress and then its own (on a busy disk a commit is the whole cost
of an answer). A call's rows travel together, so a batch call (one row per
subject) is answered only when all of them are stored; rows the answer stands on
(a check and its answers) are committed in the same transaction.

Because one COPY carries many callers' entries, one caller must never be able to
fail it for the others: every text field is made storable when the entry is
queued (control characters escaped, length clipped), and if a batch still fails
for a reason other than a lost connection, each call's rows are written alone so
that only a call whose rows really cannot be stored fails.

A row may stand for several calls (``calls``): the edge sums up a caller's
repeated refusals (node/edge.py). The trail is kept ``audit.retention_days``;
older rows are trimmed by a background task of this writer, in small batches so
that the trim never holds up the writes of calls being answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import asyncpg

from credex.domain.persons import cannot_hold_ric, withhold
from credex.errors import CredexError
from credex.node.cancellation import cancel_and_wait, pause
from credex.node.metrics import METRICS
from credex.node.store.database import CONNECTION_LOST
from credex.node.store.inserts import Inserter, Rows

log = logging.getLogger(__name__)

_COLUMNS = ("at", "caller", "role", "method", "subject_id", "purpose", "answered", "status", "detail", "calls")
TRIM_BATCH = 10_000  # rows deleted per statement when trimming old rows
# At stop, what is queued is written for up to this long (a trail that cannot write fails it sooner).
DRAIN_SECONDS = 5.0
DRAIN_POLL_SECONDS = 0.01
# Longest text kept per column; the rest is cut with a marker, so a huge field costs nothing downstream.
_LIMITS = {"caller": 256, "role": 32, "method": 64, "subject_id": 128, "purpose": 500, "status": 32, "detail": 2000}
# Fields that hold what the caller sent: searched for ID numbers on every row (all fields of a refusal).
_CALLER_TEXT = ("caller", "subject_id", "purpose")
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_INT32 = 2**31 - 1
# Errors that mean the database is out of reach: retrying entries one by one would not help.


# Texts remembered as holding no ID number (a caller's name, its purpose, subjects asked about): at most this
# many, each at most _CLEAN_CHARS long, so that callers sending text after distinct text cost a few MB at most.
_CLEAN_TEXTS = 16384
_CLEAN_CHARS = 128


class _CleanTexts:
    """Texts found to hold no ID number today (whether a number is plausible depends on the date: a birth date)."""

    def __init__(self) -> None:
        self.texts: dict[str, None] = {}
        self.on = dt.date.min

    def __contains__(self, text: str) -> bool:
        if (today := dt.date.today()) != self.on:
            self.texts.clear()
            self.on = today
        return text in self.texts

    def add(self, text: str) -> None:
        if len(text) <= _CLEAN_CHARS:
            if len(self.texts) >= _CLEAN_TEXTS:
                self.texts.clear()
            self.texts[text] = None


_clean = _CleanTexts()


def withheld(text: str) -> str:
    """:func:`withhold` for a field of every audit row, at the cost of a count or a look-up for most texts.

    A text found to hold no ID number is remembered for the day (bounded, and only such texts:
    an ID number is never kept here), since callers, purposes and subjects recur call after call.
    """
    if cannot_hold_ric(text) or text in _clean:
        return text
    kept = withhold(text)
    if kept == text:
        _clean.add(text)
    return kept


class AuditUnavailable(CredexError, RuntimeError):
    """The audit entry could not be written, so the call must not be answered."""


def storable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with control characters and lone surrogates escaped.

    The result is always valid UTF-8 without NUL, so PostgreSQL accepts it; the
    escapes (``\\x00``) keep what the caller sent visible to whoever reads the trail.
    """
    clipped = text[:limit]
    if not clipped.isprintable():
        clipped = _UNSTORABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else "\\ufffd", clipped)
    if len(text) > limit or len(clipped) > limit:
        clipped = clipped[: limit - 1] + "…"
    return clipped


def _fits(text: str, limit: int) -> bool:
    return len(text) <= limit and text.isprintable()


def _kept_whole(text: str, limit: int) -> bool:
    """Whether ``text`` of a caller goes into the trail as it is: short enough, printable, no ID number in it."""
    return len(text) <= limit and text.isprintable() and withheld(text) == text


def storable_all(entries: list[AuditEntry]) -> tuple[AuditEntry, ...]:
    """Every row of one call made storable: the first in full, the rest by what differs from it, if it is whole."""
    first = entries[0].storable() if entries else None
    if first is None or first is not entries[0]:
        return tuple(entry.storable() for entry in entries)
    return (first, *(entry.storable_after(first) for entry in entries[1:]))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    caller: str
    role: str
    method: str
    subject_id: str
    purpose: str
    answered: int
    status: str
    at: dt.datetime
    detail: str = ""
    calls: int = 1  # how many calls this row stands for: more than one for a sum of refusals

    def storable(self) -> AuditEntry:
        """This entry with every field in a form the audit table accepts, and no resident ID number in it.

        A caller may write a person's number into any text it sends (a purpose, a search, a
        record id, its certificate's name), and a refusal may quote it: the trail keeps it
        withheld (domain/persons.py). The detail of an answer is the node's own account of
        what it answered (record ids, check ids), long and on every call, so it is spared
        the search; a service that puts caller text there withholds it itself (SearchSubjects).
        Itself, as nearly always, when nothing needs changing: this runs for every row, so
        that case is settled first, field by field, without building anything.
        """
        if (
            self.status == "OK"
            and _kept_whole(self.caller, _LIMITS["caller"])
            and _fits(self.role, _LIMITS["role"])
            and _fits(self.method, _LIMITS["method"])
            and _kept_whole(self.purpose, _LIMITS["purpose"])
            and self._varying_fit()
        ):
            return self
        return self._made_storable()

    def _varying_fit(self) -> bool:
        """Whether what differs between the rows of one call (subject, count, detail) is storable as it is."""
        return (
            0 <= self.answered <= _INT32
            and 1 <= self.calls <= _INT32
            and _kept_whole(self.subject_id, _LIMITS["subject_id"])
            and _fits(self.detail, _LIMITS["detail"])
        )

    def _made_storable(self) -> AuditEntry:
        texts = {name: getattr(self, name) for name in _LIMITS}
        changed = False
        for name in _CALLER_TEXT if self.status == "OK" else _LIMITS:
            kept = withheld(texts[name])
            if kept != texts[name]:
                texts[name], changed = kept, True
        if (
            not changed
            and 0 <= self.answered <= _INT32
            and 1 <= self.calls <= _INT32
            and all(len(text) <= _LIMITS[name] and text.isprintable() for name, text in texts.items())
        ):
            return self
        return replace(
            self,
            **{name: storable(text, _LIMITS[name]) for name, text in texts.items()},  # type: ignore[arg-type]
            answered=max(0, min(self.answered, _INT32)),
            calls=max(1, min(self.calls, _INT32)),
        )

    def storable_after(self, first: AuditEntry) -> AuditEntry:
        """:meth:`storable`, for a row of the call whose first row is ``first`` (already storable and unchanged).

        A batch call's rows (one per subject, :meth:`Call.entries`) share the caller, role,
        method, purpose, status and time: what ``first`` settled for them holds for this row,
        so only what differs is looked at (a Check of a thousand subjects writes a thousand).
        """
        if (
            self.caller == first.caller
            and self.role == first.role
            and self.method == first.method
            and self.purpose == first.purpose
            and self.status == first.status == "OK"
            and self._varying_fit()
        ):
            return self
        return self.storable()

    def row(self) -> tuple[object, ...]:
        return (
            self.at,
            self.caller,
            self.role,
            self.method,
            self.subject_id,
            self.purpose,
            self.answered,
            self.status,
            self.detail,
            self.calls,
        )


@dataclass(frozen=True, slots=True)
class _Pending:
    """The rows of one call (a batch call has an audit row per subject) and the future its answer waits on."""

    entries: tuple[AuditEntry, ...]
    rows: tuple[Rows, ...]
    future: asyncio.Future[None] | None


class AuditLog:
    def __init__(
        self,
        pool: asyncpg.Pool,
        max_batch: int = 2000,
        linger: float = 0.002,
        max_queue: int = 20000,
        origin: str = "",
        writers: int = 2,
    ) -> None:
        self.pool = pool
        self._inserter = Inserter()
        self.max_batch = max_batch
        self.linger = linger
        self._last_write = 0.0
        self.max_queue = max_queue  # rows waiting, of every call queued
        self._queued = 0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.writers = writers
        self._in_hand: dict[int, list[_Pending]] = {}  # by writer: the batch it is writing
        self._tasks: list[asyncio.Task[None]] = []
        self._trimmer: asyncio.Task[None] | None = None
        self._stopped = False
        self._flushes: list[Callable[[], None]] = []  # see before_stop
        # One writer gathers a batch at a time (the others commit theirs meanwhile), so that a batch
        # is not split between writers that all woke for its first call.
        self._gathering = asyncio.Lock()
        # Calls whose answer waits on rows queued or being written, and how many calls the node has in
        # progress (the edge says, :meth:`expect`): one call at a time is written without waiting for company.
        self._calls_waiting = 0
        self._in_progress: Callable[[], int] | None = None
        self._company: asyncio.Future[None] | None = None
        self._last_calls = 0  # calls in the batch taken last
        self._entries = {
            outcome: METRICS.audit_entries.labels(origin, outcome) for outcome in ("written", "failed", "dropped")
        }

    def expect(self, in_progress: Callable[[], int]) -> None:
        """Let the writers ask how many calls are in progress, each of which will hand in rows before it answers.

        One call at a time (the last batch held one call, and no other call is in progress)
        is written at once instead of after :attr:`linger`: no company can come. Otherwise a
        writer waits as before, the whole linger: calls on their way from the callers are not
        in progress yet, and waiting for them is what keeps the commits few under load (ending
        the wait once the calls in progress were in made smaller batches and cost more CPU a
        call at 16 in flight, measured).
        """
        self._in_progress = in_progress

    @property
    def gathering(self) -> bool:
        """Whether a writer holds a batch and waits for company."""
        return self._company is not None

    def _company_coming(self) -> bool:
        """Whether another call may join the batch: the last batch held several calls, or a call in progress has
        yet to hand in its rows (always, when the edge does not say)."""
        return self._last_calls > 1 or self._in_progress is None or self._in_progress() > self._calls_waiting

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._writer(number), name=f"audit-writer-{number}") for number in range(self.writers)
        ]

    def retain(self, days: int, every_seconds: float) -> None:
        """Keep rows ``days`` days (0: forever), trimming older ones now and every ``every_seconds``."""
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None
        if days > 0:
            self._trimmer = asyncio.create_task(
                self._trim_every(dt.timedelta(days=days), every_seconds), name="audit-trim"
            )

    @property
    def trimming(self) -> bool:
        """Whether old rows are being trimmed (a retention is set)."""
        return self._trimmer is not None and not self._trimmer.done()

    async def trim(self, older_than: dt.datetime) -> int:
        """Delete the rows written before ``older_than``, a batch per statement; return how many."""
        trimmed = 0
        while True:
            async with self.pool.acquire() as conn:
                status = await conn.execute(
                    "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2)",
                    older_than,
                    TRIM_BATCH,
                )
            deleted = int(status.split()[-1])
            trimmed += deleted
            if deleted < TRIM_BATCH:
                return trimmed

    async def _trim_every(self, keep: dt.timedelta, every_seconds: float) -> None:
        """The retention task: survives any failure (logged), so the trail never grows for good."""
        while True:
            try:
                trimmed = await self.trim(dt.datetime.now(dt.UTC) - keep)
            except Exception as exc:  # the database may be away for a while; try again next round
                log.warning("trimming the audit log failed, retrying in %g s: %s", every_seconds, exc)
            else:
                if trimmed:
                    log.info("audit log: %d rows older than %d days trimmed", trimmed, keep.days)
            await pause(every_seconds)

    def before_stop(self, flush: Callable[[], None]) -> None:
        """Have ``flush`` hand in what it holds back (summed refusals) when the trail stops, before the last write."""
        self._flushes.append(flush)

    async def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Write what is queued, for up to ``drain_seconds`` (the database may be gone), then stop writing.

        Every entry still waiting then (queued or in the batch being written) fails; none hangs.
        """
        for flush in self._flushes:
            flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                while (self._queued or self._in_hand) and any(not writer.done() for writer in self._tasks):
                    await pause(DRAIN_POLL_SECONDS)
        self._stopped = True
        await cancel_and_wait(*self._tasks, self._trimmer)  # a stop cut short (Node.stop's limit) ends there
        self._tasks, self._trimmer = [], None
        pending = [held for batch in self._in_hand.values() for held in batch]
        self._in_hand = {}
        while not self._queue.empty():
            pending.append(self._take())
        self._fail(pending, AuditUnavailable("the node is shutting down"))

    def _busy(self) -> bool:
        """A write finished within the last few lingers: more calls are probably arriving."""
        return time.monotonic() - self._last_write < 5 * self.linger

    async def record(self, entry: AuditEntry) -> None:
        """Queue ``entry`` and wait until it is committed; raise :class:`AuditUnavailable` if it cannot be."""
        await self.record_all([entry])

    async def record_all(self, entries: list[AuditEntry], rows: tuple[Rows, ...] = ()) -> None:
        """Queue the rows of one call (a batch call has one per subject) and wait until all are committed.

        The call is answered only if every one of its rows is stored, and refused whole
        if any is not: its rows travel together, in one batch, and settle one future.
        ``rows`` of other tables (a check and its answers) are committed in the same
        transaction: what the answer stands on is stored exactly when its trail is.
        """
        if self._stopped:
            raise AuditUnavailable("the node is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._calls_waiting += 1
        try:
            if not self._put(storable_all(entries), future, rows):
                raise AuditUnavailable(f"audit queue full ({self._queued:,} entries waiting for the database)")
            await future
        finally:
            self._calls_waiting -= 1

    def note(self, entry: AuditEntry) -> bool:
        """Queue ``entry`` without waiting for it (for summaries of refused calls); False if the queue is full."""
        return not self._stopped and self._put((entry.storable(),), None)

    def _put(
        self, entries: tuple[AuditEntry, ...], future: asyncio.Future[None] | None, rows: tuple[Rows, ...] = ()
    ) -> bool:
        if self._queued + len(entries) > self.max_queue:
            self._entries["dropped"].inc(len(entries))
            return False
        self._queued += len(entries)
        self._queue.put_nowait(_Pending(entries, rows, future))
        company = self._company
        if company is not None and self._queued >= self.max_batch:
            self._end_gathering(company)  # the batch is full: write it now
        return True

    def _end_gathering(self, company: asyncio.Future[None]) -> None:
        """End a writer's wait for company, whichever comes first: the batch complete or the linger over."""
        if self._company is company:
            self._company = None
        if not company.done():
            company.set_result(None)

    def _take(self) -> _Pending:
        pending = self._queue.get_nowait()
        self._queued -= len(pending.entries)
        return pending

    async def _writer(self, number: int) -> None:
        """One of the writers: takes what is queued and commits it. Several run at once, so a batch
        is taken while the one before it commits, and PostgreSQL flushes their commits together."""
        while True:
            async with self._gathering:
                first = await self._queue.get()
                self._queued -= len(first.entries)
                batch = self._in_hand[number] = [first]
                # Under load, wait a moment for company: one commit for many calls
                # costs the database far less than one each.
                if (not self._queue.empty() or self._busy()) and self._company_coming():
                    await self._gather()
                held = len(first.entries)
                while held < self.max_batch and not self._queue.empty():
                    batch.append(pending := self._take())
                    held += len(pending.entries)
                self._last_calls = len(batch)
            self._last_write = time.monotonic()
            await self._write(batch)
            del self._in_hand[number]

    async def _gather(self) -> None:
        """Wait :attr:`linger` for company, or until the batch is full."""
        loop = asyncio.get_running_loop()
        company = self._company = loop.create_future()
        timer = loop.call_later(self.linger, self._end_gathering, company)
        try:
            await company
        finally:
            timer.cancel()
            if self._company is company:  # cancelled while waiting
                self._company = None

    async def _write(self, batch: list[_Pending]) -> None:
        """Write ``batch``; settle every future in it, whatever happens (the writer must never die)."""
        try:
            await self._store(batch)
        except CONNECTION_LOST as exc:
            log.error("audit log write of %d calls failed: %s", len(batch), exc)
            self._fail(batch, AuditUnavailable(f"audit log unavailable: {exc}"))
            return
        except Exception as exc:  # refused by the database or by the driver's encoder
            if len(batch) == 1:
                log.error("audit entries of a call not stored: %s", exc)
                self._fail(batch, AuditUnavailable(f"audit entry not stored: {exc}"))
                return
            # Something in the batch is unstorable: find the call it belongs to without failing the others.
            log.warning("audit batch of %d calls failed (%s); writing each call's entries alone", len(batch), exc)
            for index, pending in enumerate(batch):
                try:
                    await self._store([pending])
                except CONNECTION_LOST as one_exc:
                    self._fail(batch[index:], AuditUnavailable(f"audit log unavailable: {one_exc}"))
                    return
                except Exception as one_exc:
                    log.error("audit entries of a call not stored: %s", one_exc)
                    self._fail([pending], AuditUnavailable(f"audit entry not stored: {one_exc}"))
                else:
                    self._succeed([pending])
            return
        self._succeed(batch)

    async def _store(self, batch: list[_Pending]) -> None:
        """Audit rows alone: one COPY (its own transaction). With other tables' rows: one statement for all.

        A COPY is two round trips and a transaction two more; with a check's rows that was
        five before a Check could answer. Many audit rows (a busy node's batch) COPY at
        less CPU than the statement encodes them, so COPY stays where it is the whole write.
        """
        entries = [entry.row() for pending in batch for entry in pending.entries]
        tables: dict[tuple[str, tuple[str, ...]], list[tuple[object, ...]]] = {}
        for rows in (rows for pending in batch for rows in pending.rows):
            tables.setdefault((rows.table, rows.columns), []).extend(rows.records)
        async with self.pool.acquire() as conn:
            if not tables:
                await conn.copy_records_to_table("audit_log", records=entries, columns=_COLUMNS)
                return
            together = [Rows("audit_log", _COLUMNS, entries)]
            together.extend(Rows(table, columns, records) for (table, columns), records in tables.items())
            await self._inserter.insert(conn, together)

    def _succeed(self, batch: list[_Pending]) -> None:
        self._entries["written"].inc(sum(len(pending.entries) for pending in batch))
        for pending in batch:
            if pending.future is not None and not pending.future.done():
                pending.future.set_result(None)

    def _fail(self, batch: list[_Pending], error: AuditUnavailable) -> None:
        self._entries["failed"].inc(sum(len(pending.entries) for pending in batch))
        for pending in batch:
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(error)
