"""Ed25519 over batches in worker processes: the same answers as in process, in order, whatever happens to a worker."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credex.crypto.keys import public_raw
from credex.crypto.parallel import SignatureWorkers

from .conftest import eventually


@pytest.fixture
async def workers() -> AsyncIterator[SignatureWorkers]:
    """A pool whose workers have started and answered: batches from here on go to them."""
    pool = SignatureWorkers(workers=2, min_batch=4)
    try:
        await started(pool)
        yield pool
    finally:
        await pool.close()


async def started(pool: SignatureWorkers) -> None:
    key, messages = batch(pool.min_batch)
    assert await pool.sign(key, messages) == [key.sign(m) for m in messages]  # done in process meanwhile
    await eventually(lambda: asyncio.sleep(0, pool.ready))


def batch(n: int) -> tuple[Ed25519PrivateKey, list[bytes]]:
    return Ed25519PrivateKey.generate(), [os.urandom(100 + i % 7) for i in range(n)]


async def test_a_batch_is_signed_in_the_workers_as_the_key_signs_it_in_process(workers: SignatureWorkers) -> None:
    key, messages = batch(101)
    signatures = await workers.sign(key, messages)
    assert workers.started
    assert signatures == [key.sign(m) for m in messages]  # Ed25519 is deterministic: same bytes, same order


async def test_verification_answers_each_item_in_order_and_refuses_every_kind_of_forgery(
    workers: SignatureWorkers,
) -> None:
    key, messages = batch(60)
    other = Ed25519PrivateKey.generate()
    public = public_raw(key.public_key())
    items = [(public, key.sign(m), m) for m in messages]
    items[3] = (public, other.sign(messages[3]), messages[3])  # signed by someone else
    items[17] = (public, items[17][1], messages[17] + b"!")  # message changed after signing
    items[40] = (b"\x01" * 31, items[40][1], messages[40])  # no Ed25519 public key at all
    items[41] = (public, b"\x00" * 64, messages[41])  # a signature of zeros
    items[59] = (public, b"short", messages[59])  # not even a signature's length
    answers = await workers.verify(items)
    assert workers.started
    assert [i for i, ok in enumerate(answers) if not ok] == [3, 17, 40, 41, 59]


async def test_a_batch_smaller_than_the_threshold_never_starts_a_worker() -> None:
    pool = SignatureWorkers(workers=2, min_batch=50)
    key, messages = batch(49)
    try:
        assert await pool.sign(key, messages) == [key.sign(m) for m in messages]
        public = public_raw(key.public_key())
        assert all(await pool.verify([(public, key.sign(m), m) for m in messages]))
        assert not pool.started
    finally:
        await pool.close()


async def test_a_killed_worker_costs_time_not_an_answer(workers: SignatureWorkers) -> None:
    key, messages = batch(40)
    running = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert running, "the pool started no worker process"
    for process in running:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
    await eventually(lambda: asyncio.sleep(0, not any(p.is_alive() for p in running)))
    public = public_raw(key.public_key())
    assert await workers.sign(key, messages) == [key.sign(m) for m in messages]
    assert all(await workers.verify([(public, key.sign(m), m) for m in messages]))
    # and the pool after that is a working one again
    await started(workers)
    assert await workers.sign(key, messages[:10]) == [key.sign(m) for m in messages[:10]]


async def test_close_stops_the_workers_and_a_later_batch_starts_them_again(workers: SignatureWorkers) -> None:
    running = [p for p in multiprocessing.active_children() if p.is_alive()]
    await workers.close()
    assert not workers.started and not workers.ready
    assert not any(p.is_alive() for p in running)
    await started(workers)
    key, messages = batch(20)
    assert await workers.sign(key, messages) == [key.sign(m) for m in messages]


async def test_a_cancelled_batch_leaves_nothing_that_close_waits_on(workers: SignatureWorkers) -> None:
    key, messages = batch(20_000)
    task = asyncio.create_task(workers.sign(key, messages))
    await asyncio.sleep(0)  # the batch is under way in the workers
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(workers.close(), timeout=60)  # a bound on a hang, not a timing claim
    assert not workers.started


_POOL_THEN_WAIT = """
import asyncio, multiprocessing, os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from credex.crypto.parallel import SignatureWorkers

async def main():
    pool = SignatureWorkers(workers=2, min_batch=1)
    await pool.sign(Ed25519PrivateKey.generate(), [b"x"] * 10)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_the_workers_of_a_node_killed_with_sigkill_exit_by_themselves(tmp_path: Path) -> None:
    script = tmp_path / "pool.py"
    script.write_text(_POOL_THEN_WAIT)
    process = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=120)
    pids = [int(p) for p in line.split()]
    assert pids and all(_running(pid) for pid in pids)
    process.send_signal(signal.SIGKILL)
    await eventually(lambda: asyncio.sleep(0, not any(_running(pid) for pid in pids)))
    # and nothing holds the killed process's pipe open any more: waiting for it ends
    await asyncio.wait_for(process.wait(), timeout=60)


_PROGRAM_THAT_IMPORTS_THE_CLI = """
import asyncio
import credex.node.cli  # what the credex console script imports before anything runs
from credex.crypto.parallel import SignatureWorkers

async def main():
    workers = SignatureWorkers(workers=2)
    workers._pool()
    while not workers.ready:
        await asyncio.sleep(0.05)
    loaded = "sorted(m for m in __import__('sys').modules if m.startswith('credex.node'))"
    asked = workers._executor.submit(eval, loaded)
    print(asked.result(), flush=True)
    await workers.close()

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_a_worker_imports_only_what_it_runs_not_the_program_that_started_it(tmp_path: Path) -> None:
    """A worker of the ``credex`` console script does not import the whole CLI (most of a second each)."""
    script = tmp_path / "program.py"
    script.write_text(_PROGRAM_THAT_IMPORTS_THE_CLI)
    process = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), timeout=300)  # a bound on a hang, not a timing claim
    assert process.returncode == 0
    assert out.decode().strip() == "[]"
