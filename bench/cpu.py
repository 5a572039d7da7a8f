"""Where a benchmark's wall time goes: CPU by process and thread, event-loop CPU by stage, store time by statement.

    with Breakdown(postgres_pid, broker_pid) as seen:
        ...  # the work measured
    seen.print(events)

Read from /proc (Linux): the CPU seconds of this process's event-loop thread and of
its other threads (``asyncio.to_thread`` work, gRPC), of its child processes (the
signature workers), of the PostgreSQL server and its backends and of the broker;
cProfile on the event-loop thread (timed by its CPU clock), its time summed by stage (which module the time
was spent in); and, for every SQL statement the node sent, its count and the wall
time from sending to answer (PostgreSQL's work plus the round trip), summed by its
first words. Only for benchmarks: it wraps asyncpg's connection methods while active.
"""

from __future__ import annotations

import cProfile
import functools
import os
import pstats
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg

_TICKS = os.sysconf("SC_CLK_TCK")
_REPO = str(Path(__file__).resolve().parents[1]) + os.sep

# Where event-loop time is spent, by the file its function lives in: the first match names the stage.
STAGES: tuple[tuple[str, str], ...] = (
    ("aiokafka", "Kafka fetch and decode (aiokafka)"),
    ("kafka", "Kafka fetch and decode (aiokafka)"),
    ("asyncpg", "store statements, client side (asyncpg)"),
    ("credex/crypto", "verify and envelope (credex.crypto)"),
    ("google/protobuf", "protobuf parse and serialize"),
    ("credex/node/store", "building store rows (credex.node.store)"),
    ("credex/node/intake", "intake bookkeeping (credex.node.intake)"),
    ("credex/node/chain", "checkpoints, tiles, alarms (credex.node.chain)"),
    ("credex/node/sync", "sync (credex.node.sync)"),
    ("grpc", "gRPC"),
    ("concurrent/futures", "hand-off to threads and workers"),
    ("multiprocessing", "hand-off to threads and workers"),
    ("asyncio", "event loop itself (asyncio)"),
    ("selectors", "event loop itself (asyncio)"),
)


def _cpu_of(stat: Path) -> float:
    """User + system CPU seconds from a /proc stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[parent].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_of_tree(pid: int) -> dict[int, float]:
    """CPU seconds so far of ``pid`` and of every process below it, by pid (Linux)."""
    seconds: dict[int, float] = {}
    for member in _tree(pid):
        try:
            seconds[member] = _cpu_of(Path(f"/proc/{member}/stat"))
        except OSError:
            continue
    return seconds


def _reaped_children() -> float:
    """CPU seconds of this process's children that have ended and been waited for (a file's mapping workers)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / _TICKS


def _threads() -> dict[int, float]:
    seconds: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            seconds[int(task.name)] = _cpu_of(task / "stat")
        except OSError:
            continue
    return seconds


def _short(filename: str) -> str:
    """A source file named from its package down (credex/node/..., asyncpg/...), not the machine's path."""
    for marker in ("site-packages/", _REPO, "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _stage(filename: str, function: str) -> str:
    if filename == "~":  # a builtin: cProfile names it by what it is a method of
        if "select.epoll" in function or "poll" in function:
            return "waiting in epoll"
        return f"builtin {function[:50]}"
    for part, stage in STAGES:
        if part in filename:
            return stage
    return "other Python"


class Breakdown:
    """CPU and statement time over a ``with`` block (see the module docstring)."""

    def __init__(self, postgres_pid: int | None, broker_pid: int | None) -> None:
        self.postgres_pid = postgres_pid
        self.broker_pid = broker_pid
        self.statements: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        # CPU time of the event-loop thread, not wall time: on a loaded machine wall time charges
        # whatever ran when the thread was descheduled (a send() "took" 100 ms).
        self._profile = cProfile.Profile(time.thread_time)
        self._undo: list[Callable[[], None]] = []
        self._wall = 0.0

    def _snapshot(self) -> dict[str, float]:
        me = os.getpid()
        threads = _threads()
        loop = threads.pop(threading.get_native_id(), 0.0)
        workers = cpu_of_tree(me)
        workers.pop(me, None)
        seen = {
            "event-loop thread": loop,
            "other threads of the node process": sum(threads.values()),
            "worker processes (signatures, mapping)": sum(workers.values()) + _reaped_children(),
        }
        if self.postgres_pid:
            seen["PostgreSQL (server and backends)"] = sum(cpu_of_tree(self.postgres_pid).values())
        if self.broker_pid:
            seen["broker"] = sum(cpu_of_tree(self.broker_pid).values())
        return seen

    def _time_statements(self) -> None:
        for name in ("execute", "fetch", "fetchval", "fetchrow", "executemany", "copy_records_to_table"):
            original = getattr(asyncpg.Connection, name)

            def timed(original: Any = original, name: str = name) -> Any:
                @functools.wraps(original)
                async def call(conn: Any, *args: Any, **kwargs: Any) -> Any:
                    key = (f"COPY INTO {args[0]}" if name == "copy_records_to_table" else str(args[0]))[:70]
                    started = time.perf_counter()
                    try:
                        return await original(conn, *args, **kwargs)
                    finally:
                        seen = self.statements[" ".join(key.split())]
                        seen[0] += 1
                        seen[1] += time.perf_counter() - started

                return call

            setattr(asyncpg.Connection, name, timed())
            self._undo.append(functools.partial(setattr, asyncpg.Connection, name, original))

    def __enter__(self) -> Breakdown:
        self._time_statements()
        self._before = self._snapshot()
        self._wall = time.perf_counter()
        self._profile.enable()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._profile.disable()
        self._wall = time.perf_counter() - self._wall
        self._after = self._snapshot()
        for undo in self._undo:
            undo()

    def stages(self) -> Iterator[tuple[str, float]]:
        """Event-loop seconds by stage (cProfile's own time per function, summed by where it lives)."""
        stats = pstats.Stats(self._profile)
        totals: defaultdict[str, float] = defaultdict(float)
        for (filename, _, function), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
            totals[_stage(filename, function)] += own
        yield from sorted(totals.items(), key=lambda kv: -kv[1])[:16]

    def functions(self, top: int = 15) -> list[tuple[str, float]]:
        """The event-loop functions with the most own time: file (from the package down), line and name."""
        stats = pstats.Stats(self._profile)
        ranked = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
        return [
            (f"{_short(filename)}:{line} {function}"[:70], own)
            for (filename, line, function), (_, _, own, _, _) in ranked
        ]

    def print(self, events: int) -> None:
        print(f"\n  where the {self._wall:.1f} s went ({events:,} events): CPU seconds, and per event", flush=True)
        for name, before in self._before.items():
            spent = self._after.get(name, 0.0) - before
            print(f"    {name:<44} {spent:>7.2f} s   {spent / events * 1e6:>7.0f} us/ev")
        print("  event-loop thread CPU by stage (cProfile on its CPU clock, own time; profiling adds to it):")
        for stage, seconds in self.stages():
            print(f"    {stage:<44} {seconds:>7.2f} s   {seconds / events * 1e6:>7.0f} us/ev")
        print("  event-loop thread CPU by function (own time; the top of 'other Python' and the rest):")
        for where, seconds in self.functions():
            print(f"    {where:<70} {seconds:>7.2f} s   {seconds / events * 1e6:>7.1f} us/ev")
        print("  store statements, wall time from send to answer (PostgreSQL's work and the round trip):")
        ranked = sorted(self.statements.items(), key=lambda kv: -kv[1][1])
        for sql, (calls, seconds) in ranked[:14]:
            print(f"    {seconds:>7.2f} s {int(calls):>6} calls {seconds / max(calls, 1) * 1e3:>7.2f} ms/call  {sql}")
