"""Mapping a file's rows through a profile, a batch at a time, off the event loop.

Mapping is CPU-bound. For small files it runs in a worker thread, which keeps
the node's event loop responsive. For large files it runs in worker processes,
one per core by default, each mapping every N-th batch, so that mapping uses
every core and overlaps with signing and storing earlier batches; batches come
back in file order as canonical records with their provenance
(:class:`~credex.domain.records.TakenRecord`), which cross between processes as
their canonical bytes.
What the store keeps of a record (bytes, digest, subject id) is the ledger's to
derive. Bounded queues give back-pressure: no worker runs more than a few
batches ahead of the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from credex.adapters.profile import (
    MappingContext,
    Problem,
    Profile,
    ProfileError,
    ProfileSpec,
    Rejection,
    TableMapper,
    Withdrawn,
    header_key,
)
from credex.adapters.tables import FileUnreadable, Row, Table, read_tables
from credex.domain.reasons import Reason
from credex.domain.records import Provenance, TakenRecord
from credex.v1 import record_pb2

_AHEAD = 4  # batches the worker process may map ahead of the ledger
_ERRORS: dict[str, type[Exception]] = {"FileUnreadable": FileUnreadable, "ProfileError": ProfileError}


@dataclass
class Batch:
    records: list[TakenRecord] = field(default_factory=list)
    rejections: list[tuple[str, Rejection]] = field(default_factory=list)
    rows: int = 0
    source: str = ""
    progress: tuple[int, int] = (0, 0)


class Reader:
    """Pulls rows from every table of a file through the profile."""

    def __init__(self, path: Path, profile: Profile, context: MappingContext, batch_size: int) -> None:
        self.profile, self.context, self.batch_size = profile, context, batch_size
        self._tables: Iterator[Table] = read_tables(path)
        self._current: tuple[Table, TableMapper | None] | None = None
        self.rows = RowMapper(profile, context)

    def next_batch(self, *, mapped: bool = True) -> Batch | None:
        """The next ``batch_size`` rows, mapped; with ``mapped=False`` only read and counted."""
        batch = Batch()
        while batch.rows < self.batch_size:
            if self._current is None:
                table = next(self._tables, None)
                if table is None:
                    break
                mapper = None
                if table.header:  # JSON sources: every row names its own fields
                    mapper = self.profile.bind(table.header, table.source, self.context, sheet=table.sheet)
                self._current = (table, mapper)
            table, mapper = self._current
            row = next(table.rows, None)
            if row is None:
                batch.source, batch.progress = table.source, table.progress()
                self._current = None
                continue
            batch.rows += 1
            if not mapped:
                continue
            outcome = self.rows.map(row, table.source, mapper)
            if isinstance(outcome, Rejection):
                batch.rejections.append((table.source, outcome))
            else:
                batch.records.append(taken(outcome, Provenance(table.source, row.locator, self.profile.name)))
            batch.source = table.source
        if self._current is not None:
            batch.progress = self._current[0].progress()
        return batch if batch.rows else None


class RowMapper:
    """Maps rows through a profile, choosing the kind per row where rows carry their own fields."""

    def __init__(self, profile: Profile, context: MappingContext) -> None:
        self.profile, self.context = profile, context
        self._bound: dict[tuple[tuple[str, ...], str | None], TableMapper | ProfileError] = {}
        self._kind_positions: dict[tuple[str, ...], int] = {}

    def map(
        self, row: Row, source: str, table_mapper: TableMapper | None = None
    ) -> record_pb2.Record | Withdrawn | Rejection:
        mapper = table_mapper or self._mapper_for(row, source)
        if isinstance(mapper, ProfileError):
            return Rejection(row.locator, (Problem(Reason.ROW_KIND, "", str(mapper)),), {"row": str(row.values)[:2000]})
        if row.problem is not None:
            return mapper.reject_unread(row.values, row.locator, *row.problem)
        return mapper.map_row(row.values, row.locator)

    def _mapper_for(self, row: Row, source: str) -> TableMapper | ProfileError:
        header = row.header or ()
        kind_value = None
        if self.profile.spec.kind_field is not None:
            position = self._kind_positions.get(header, -2)
            if position == -2:  # a header not seen before: find the kind field in it once
                wanted = header_key(self.profile.spec.kind_field)
                position = next((i for i, h in enumerate(header) if header_key(h) == wanted), -1)
                self._kind_positions[header] = position
            kind_value = str(row.values[position]) if position >= 0 else ""
        key = (header, kind_value)
        if key not in self._bound:
            try:
                self._bound[key] = self.profile.bind(header, source, self.context, kind_value=kind_value)
            except ProfileError as exc:
                self._bound[key] = exc
        return self._bound[key]


def map_rows(rows: list[Row], source: str, mapper: RowMapper) -> Batch:
    """A batch from rows that name their own fields (feed pages and polls)."""
    batch = Batch(source=source)
    for row in rows:
        batch.rows += 1
        outcome = mapper.map(row, source)
        if isinstance(outcome, Rejection):
            batch.rejections.append((source, outcome))
        else:
            batch.records.append(taken(outcome, Provenance(source, row.locator, mapper.profile.name)))
    return batch


def taken(outcome: record_pb2.Record | Withdrawn, provenance: Provenance) -> TakenRecord:
    """What the ledger gets of a mapped row: the record, with the platform's withdrawal if it marks one."""
    if isinstance(outcome, Withdrawn):
        return TakenRecord(outcome.record, provenance, withdrawal=outcome.reason)
    return TakenRecord(outcome, provenance)


class Mapping(Protocol):
    async def next_batch(self) -> Batch | None: ...

    def close(self) -> None: ...


class ThreadMapping:
    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    async def next_batch(self) -> Batch | None:
        return await asyncio.to_thread(self._reader.next_batch)

    def close(self) -> None:
        pass


def _work(
    path: Path, spec: ProfileSpec, context: MappingContext, batch_size: int, out: Any, worker: int, workers: int
) -> None:
    """Worker process: map batches ``worker``, ``worker + workers``, ... of the file; read past the others.

    Reading is cheap next to mapping, so each worker reads the whole file and
    the batches come out exactly as one reader would cut them.
    """
    try:
        reader = Reader(path, Profile(spec), context, batch_size)
        index = 0
        while (batch := reader.next_batch(mapped=index % workers == worker)) is not None:
            if index % workers == worker:
                out.put(batch)
            index += 1
        out.put(None)
    except (FileUnreadable, ProfileError) as exc:
        out.put((type(exc).__name__, str(exc)))
    except Exception as exc:  # anything else still ends the file, with its message
        out.put(("FileUnreadable", f"{path}: mapping failed: {type(exc).__name__}: {exc}"))


class ProcessMapping:
    """Batches mapped by ``workers`` processes, handed out in file order."""

    def __init__(self, path: Path, profile: Profile, context: MappingContext, batch_size: int, workers: int) -> None:
        # "spawn": the parent runs threads (gRPC, asyncio executors) that fork would copy half-way.
        ctx = multiprocessing.get_context("spawn")
        self._queues: list[Any] = [ctx.Queue(maxsize=_AHEAD) for _ in range(workers)]
        self._processes = [
            ctx.Process(
                target=_work, args=(path, profile.spec, context, batch_size, self._queues[k], k, workers), daemon=True
            )
            for k in range(workers)
        ]
        for process in self._processes:
            process.start()
        self._next = 0

    async def next_batch(self) -> Batch | None:
        worker = self._next % len(self._queues)
        item = await asyncio.to_thread(self._get, worker)
        if isinstance(item, tuple):
            name, message = item
            raise _ERRORS.get(name, FileUnreadable)(message)
        self._next += 1
        return item  # type: ignore[no-any-return]

    def _get(self, worker: int) -> Any:
        while True:
            try:
                return self._queues[worker].get(timeout=1.0)
            except queue.Empty:
                process = self._processes[worker]
                if not process.is_alive():
                    return ("FileUnreadable", f"a mapping worker died (exit code {process.exitcode})")

    def close(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process, channel in zip(self._processes, self._queues, strict=True):
            process.join(timeout=5)
            with contextlib.suppress(Exception):
                channel.close()


def open_mapping(
    path: Path,
    profile: Profile,
    context: MappingContext,
    batch_size: int,
    *,
    parallel_from_bytes: int,
    workers: int = 0,
) -> Mapping:
    """Worker processes (``workers``, default one per core) for files of ``parallel_from_bytes`` or more
    (0: never), else a thread."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FileUnreadable(f"{path}: cannot open: {exc.strerror}") from exc
    if parallel_from_bytes and size >= parallel_from_bytes:
        return ProcessMapping(path, profile, context, batch_size, workers or os.cpu_count() or 1)
    return ThreadMapping(Reader(path, profile, context, batch_size))
