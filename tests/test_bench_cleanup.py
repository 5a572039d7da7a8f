"""A benchmark stopped by SIGTERM (``timeout``, a CI limit, a person) leaves nothing running.

An embedded PostgreSQL outlives the process that started it on purpose (a node that
crashes keeps its database), so a bench killed without stopping its services left
servers and brokers behind that nobody stopped. Here real benches run as they are
run, in their own process with their own temporary folder, are sent SIGTERM at a
point where they hold services and child processes, and afterwards no process they
started is alive, their PostgreSQL included, and their temporary folder is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from credex.node.embedded import _alive

from .conftest import eventually

REPO = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, theirs, ...), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def postmasters(folder: Path) -> set[int]:
    """The PostgreSQL servers running from data folders under ``folder`` (a daemon: no descendant of the bench)."""
    servers = set()
    for pid_file in folder.glob("credex-bench-*/**/postmaster.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split("\n", 1)[0])
            if _alive(pid):
                servers.add(pid)
    return servers


def command_line(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []  # gone meanwhile


@contextlib.contextmanager
def started(tmp_path: Path, *arguments: str) -> Iterator[subprocess.Popen[bytes]]:
    """A bench run as a person runs it, with its temporary folders under ``tmp_path`` and its output in a file;
    killed if the test ends with it still running."""
    environment = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    with (tmp_path / "bench.log").open("w") as log:
        bench = subprocess.Popen(
            [sys.executable, "-m", *arguments], cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield bench
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


def output(tmp_path: Path) -> str:
    return (tmp_path / "bench.log").read_text()


def temporary_folders(tmp_path: Path) -> list[Path]:
    return list(tmp_path.glob("credex-bench-*"))


async def stopped_by_sigterm(tmp_path: Path, bench: subprocess.Popen[bytes], held: set[int]) -> None:
    """SIGTERM ``bench``; then it exits, and nothing it started (``held``, its servers) stays alive or on disk.

    Helpers of the standard library (multiprocessing's resource tracker) notice their
    parent is gone a moment after it exits: what is left is polled for, not read once.
    """
    servers = postmasters(tmp_path)
    assert servers, "the bench was running a PostgreSQL when it was stopped"
    bench.send_signal(signal.SIGTERM)
    await asyncio.to_thread(bench.wait, 240)
    assert bench.returncode != 0, "a stopped bench does not claim success"

    async def nothing_left() -> bool:
        return not any(_alive(pid) for pid in held | servers)

    await eventually(nothing_left, timeout=60)
    assert not temporary_folders(tmp_path), "its temporary folder, store and all, is removed"


async def test_a_bench_stopped_while_serving_stops_its_postgres_broker_and_nodes(tmp_path: Path) -> None:
    with started(tmp_path, "bench.lookup", "--rows", "2000", "--seconds", "60") as bench:

        async def serving() -> set[int]:
            # Said just before the load starts: by then the node, the broker and PostgreSQL all run.
            assert bench.poll() is None, output(tmp_path)[-3000:]
            return descendants(bench.pid) if "node holds" in output(tmp_path) else set()

        held = await eventually(serving, timeout=240)
        await stopped_by_sigterm(tmp_path, bench, held)


async def test_a_scale_bench_stopped_while_building_stops_its_builder_and_signing_workers(tmp_path: Path) -> None:
    with started(tmp_path, "bench.scale", "--scale", "0.01", "--seconds", "1") as bench:

        async def building() -> set[int]:
            # The builder is a child process and its signing workers are its children.
            everything = descendants(bench.pid)
            assert bench.poll() is None, output(tmp_path)[-3000:]
            builders = descendants_with_children(everything)
            return everything if builders and postmasters(tmp_path) else set()

        held = await eventually(building, timeout=240)
        await stopped_by_sigterm(tmp_path, bench, held)


def descendants_with_children(pids: set[int]) -> set[int]:
    """Those of ``pids`` that are Python processes with a worker per core below them (a builder and its signers)."""
    cores = os.cpu_count() or 1
    return {pid for pid in pids if len(descendants(pid)) >= cores and b"python" in (command_line(pid) or [b""])[0]}
