"""Nodes and ingests killed with SIGKILL at random points: no event lost, none applied twice, one root per origin.

After every kill the dead node's tiles equal the events they cover (they are
written in the transaction that moves the watermark, so a kill during a tile
write leaves both or neither).

Nodes run as real ``credex node run`` processes and files are taken in by real
``credex ingest`` processes, so a kill is a kill: no ``finally`` runs, no
connection is closed politely. The random points are drawn from a fixed seed,
so a failure replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from credex.adapters.samples import synth
from credex.crypto.merkle import MerkleTree
from credex.crypto.tiles import Growth, TileId, TileTree, grow
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.feeds.files import file_hash

from .conftest import TestFederation

CREDEX = [sys.executable, "-m", "credex.node.cli"]
ORIGINS = ["310000", "320000", "330000"]


class NodeProcess:
    def __init__(self, federation: TestFederation, origin: str, logs: Path) -> None:
        self.federation = federation
        self.origin = origin
        self.logs = logs
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        log = (self.logs / f"{self.origin}-{self.starts}.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            *CREDEX,
            "node",
            "run",
            "--config",
            str(self.federation.layout.config_path(self.origin)),
            env=self.federation.node_env(self.origin),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        log.flush()
        assert b"ready" in line, f"{self.origin} did not start: {_tail(Path(log.name))}"

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.process = None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), timeout=30)
        self.process = None


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def ingest(node: NodeProcess, path: Path, kill_mid_file: random.Random | None = None) -> bool:
    """Run ``credex ingest``; with ``kill_mid_file``, SIGKILL it while the file's transaction is open.

    True if it ran to the end. The kill waits for the ingest's own transaction to
    have written rows (seen in ``pg_stat_activity``), so it lands mid-file however
    fast or slow the machine is, instead of after a guessed number of seconds.
    """
    process = await asyncio.create_subprocess_exec(
        *CREDEX,
        "ingest",
        "--config",
        str(node.federation.layout.config_path(node.origin)),
        str(path),
        env=node.federation.node_env(node.origin),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    if kill_mid_file is not None and await _writing_transaction_seen(node, process):
        await asyncio.sleep(kill_mid_file.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        await process.wait()
        # Mid-file only if the file's transaction had not committed yet: judged by the store, not the clock.
        return await _file_taken_in(node, path)
    output, _ = await process.communicate()
    assert process.returncode == 0, f"ingest of {path} failed: {output.decode()[-3000:]}"
    return True


async def _file_taken_in(node: NodeProcess, path: Path) -> bool:
    conn = await asyncpg.connect(node.federation.database_url(node.origin))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM ingest_files WHERE content_hash = $1", file_hash(path)))
    finally:
        await conn.close()


async def _writing_transaction_seen(node: NodeProcess, process: asyncio.subprocess.Process) -> bool:
    """Wait until another backend of the node's database holds a transaction that wrote; False if the ingest ended."""
    conn = await asyncpg.connect(node.federation.database_url(node.origin))
    try:
        while process.returncode is None:
            writing = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL AND query ILIKE '%events%'"
            )
            if writing:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=0.01)
        return False
    finally:
        await conn.close()


async def node_state(url: str) -> dict[str, tuple[int, int, bytes]]:
    """Per origin: (events held, highest contiguous seq, Merkle root over them)."""
    conn = await asyncpg.connect(url)
    try:
        result = {}
        for origin in ORIGINS:
            rows = await conn.fetch("SELECT seq, leaf_hash FROM events WHERE origin = $1 ORDER BY seq", origin)
            tree = MerkleTree(bytes(r["leaf_hash"]) for r in rows)
            contiguous = next((i for i, r in enumerate(rows, start=1) if r["seq"] != i), len(rows) + 1) - 1
            result[origin] = (len(rows), contiguous, tree.root())
        return result
    finally:
        await conn.close()


async def assert_tiles_match_events(url: str) -> None:
    """Every origin's tiles cover exactly its gap-free events, and equal the tiles those events give.

    Read in one snapshot: a live node may be taking in its peers' events meanwhile.
    """
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await _tiles_match_events(conn)
    finally:
        await conn.close()


async def _tiles_match_events(conn: asyncpg.Connection) -> None:
    for origin in ORIGINS:
        progress = await conn.fetchrow(
            "SELECT contiguous_seq, tiled_seq FROM origin_progress WHERE origin = $1", origin
        )
        if progress is None:
            assert not await conn.fetchval("SELECT count(*) FROM log_tiles WHERE origin = $1", origin)
            continue
        tiled = int(progress["tiled_seq"])
        assert tiled == progress["contiguous_seq"], f"{origin}: tiles cover {tiled}, events {dict(progress)}"
        leaves = [
            bytes(r["leaf_hash"])
            for r in await conn.fetch(
                "SELECT leaf_hash FROM events WHERE origin = $1 AND seq <= $2 ORDER BY seq", origin, tiled
            )
        ]
        stored = await conn.fetch("SELECT level, idx, hashes, interior FROM log_tiles WHERE origin = $1", origin)
        held = {TileId(r["level"], r["idx"]): bytes(r["hashes"]) for r in stored}
        inner = {TileId(r["level"], r["idx"]): bytes(r["interior"]) for r in stored if r["interior"] is not None}
        assert Growth(held, inner) == grow(0, {}, leaves), f"{origin}: the tiles are not those of the events they cover"
        assert TileTree(tiled, held).root() == MerkleTree(leaves).root()


# Twenty-four kills of node and ingest processes, each restart a process start: minutes on a
# shared 2-core machine. The bound is on a hang, not on speed.
@pytest.mark.timeout(1200)
async def test_sigkill_at_random_points_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path, postgres: EmbeddedPostgres, broker: EmbeddedBroker
) -> None:
    federation = TestFederation(tmp_path / "federation", ORIGINS, postgres, broker)
    federation.prepare()
    logs = tmp_path / "logs"
    logs.mkdir()
    nodes = {origin: NodeProcess(federation, origin, logs) for origin in ORIGINS}
    rng = random.Random(20261121)
    files: dict[str, list[Path]] = {origin: [] for origin in ORIGINS}

    def new_file(origin: str, rows: int = 0) -> Path:
        index = len(files[origin])
        path = tmp_path / f"{origin}-{index}.csv"
        rows = rows or rng.randrange(300, 900)
        synth.write(
            path, synth.SynthSpec(region=origin, rows=rows, bad_share=0.05, seed=index, first_row=index * 10000)
        )
        files[origin].append(path)
        return path

    for node in nodes.values():
        await node.start()
    kills = {"ingest": 0, "publishing": 0, "intake": 0, "sync": 0}
    try:
        for round_number in range(6):
            origin, peer = rng.sample(ORIGINS, 2)
            # During ingest: the ingest process dies mid-file; its transaction must vanish whole.
            if not await ingest(nodes[origin], new_file(origin, rows=6000), kill_mid_file=rng):
                kills["ingest"] += 1
            await assert_tiles_match_events(federation.database_url(origin))
            # During publishing: the origin dies right after a file, while its relay publishes.
            await ingest(nodes[origin], new_file(origin))
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            await nodes[origin].kill()
            kills["publishing"] += 1
            await assert_tiles_match_events(federation.database_url(origin))
            await nodes[origin].start()
            # During intake: a peer dies while it consumes the origin's new events.
            await ingest(nodes[origin], new_file(origin))
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            await nodes[peer].kill()
            kills["intake"] += 1
            await assert_tiles_match_events(federation.database_url(peer))
            await nodes[peer].start()
            # During sync: a peer comes back far behind and dies again while catching up.
            await nodes[peer].kill()
            await ingest(nodes[origin], new_file(origin))
            await nodes[peer].start()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            await nodes[peer].kill()
            kills["sync"] += 1
            await assert_tiles_match_events(federation.database_url(peer))
            await nodes[peer].start()
            if round_number % 2:
                await ingest(nodes[peer], new_file(peer))  # everyone publishes, not only the origin

        assert kills == {"ingest": 6, "publishing": 6, "intake": 6, "sync": 6}, kills
        # Finish every file that a kill interrupted; finished ones are recognised and left alone.
        for origin, paths in files.items():
            for path in paths:
                await ingest(nodes[origin], path)

        heads: dict[str, int] = {}
        for origin in ORIGINS:
            conn = await asyncpg.connect(federation.database_url(origin))
            try:
                heads[origin] = int(
                    await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events WHERE origin = $1", origin)
                )
                taken = await conn.fetch("SELECT rows_in, accepted, quarantined, new_records FROM ingest_files")
                assert len(taken) == len(files[origin]), "every file is taken in exactly once"
                assert all(r["rows_in"] == r["accepted"] + r["quarantined"] for r in taken)
                assert sum(r["new_records"] for r in taken) == heads[origin], "no event lost, none twice"
            finally:
                await conn.close()

        states: dict[str, dict[str, tuple[int, int, bytes]]] = {}
        for _ in range(120):
            states = {o: await node_state(federation.database_url(o)) for o in ORIGINS}
            if all(states[o][origin][:2] == (heads[origin], heads[origin]) for o in ORIGINS for origin in ORIGINS):
                break
            await asyncio.sleep(1)
        for origin in ORIGINS:
            per_node = {o: states[o][origin] for o in ORIGINS}
            assert all(state[:2] == (heads[origin], heads[origin]) for state in per_node.values()), per_node
            assert len({state[2] for state in per_node.values()}) == 1, f"roots of {origin} differ: {per_node}"
        for origin in ORIGINS:
            await assert_tiles_match_events(federation.database_url(origin))
    finally:
        for node in nodes.values():
            await node.stop()
