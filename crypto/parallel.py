"""Ed25519 signing and verification of large batches in worker processes.

``cryptography``'s Ed25519 holds the GIL while it signs or verifies (measured: two
threads verify no faster than one), so threads cannot spread the node's hot paths
(intake and catch-up verify every peer event; ingest signs every record) over the
cores. Worker processes can: a batch is cut into one slice per worker, and only
the bytes to sign or check cross the pipe (key, message, signature), never a
parsed object, so what the workers answer is a list of booleans or signatures.

The workers import nothing but ``cryptography`` and start only when the first
batch of at least ``min_batch`` items arrives; smaller batches run in the calling
process, where a round trip to a worker would cost more than it saves, and so do
large ones until the workers have started (no batch waits for an interpreter to
start). A pool
whose worker died (killed, out of memory) is replaced and the batch is done in
process, so a lost worker costs time, never an answer; a worker whose node died
(SIGKILL runs no shutdown) exits by itself within a second. :meth:`close` stops the
workers and waits for them (the next large batch would start new ones); an
``await`` cancelled half-way leaves no work behind that anyone waits for.

A signing batch carries the 32 private key bytes to the node's own child processes
over a pipe: they never leave the host or the node's user, and no worker keeps
them beyond the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

MIN_BATCH = 256  # below this, a batch is signed or verified in the calling process
_WATCH_SECONDS = 0.5  # how often a worker looks whether the node that started it still lives
_T = TypeVar("_T")


def valid_signatures(publics: Sequence[bytes], signatures: Sequence[bytes], messages: Sequence[bytes]) -> list[bool]:
    """Whether each signature is the raw Ed25519 public key's over its message (runs in a worker)."""
    keys: dict[bytes, Ed25519PublicKey] = {}
    answers: list[bool] = []
    for public, signature, message in zip(publics, signatures, messages, strict=True):
        key = keys.get(public)
        if key is None:
            try:
                key = keys[public] = Ed25519PublicKey.from_public_bytes(public)
            except ValueError:
                answers.append(False)
                continue
        try:
            key.verify(signature, message)
        except InvalidSignature:
            answers.append(False)
        else:
            answers.append(True)
    return answers


def signatures_of(private: bytes, messages: Sequence[bytes]) -> list[bytes]:
    """The Ed25519 signatures of ``messages`` by the raw private key ``private`` (runs in a worker)."""
    key = Ed25519PrivateKey.from_private_bytes(private)
    return [key.sign(message) for message in messages]


def _outlive_no_parent(parent: int) -> None:
    """Worker start: exit as soon as the process that made the pool is gone.

    A node killed with SIGKILL runs no shutdown, and its workers would otherwise wait on
    their queue for ever (each holds the queue's write end too, so no EOF comes), holding
    whatever file descriptors they inherited (a supervisor's pipe stays open).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def private_raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Start workers that import only what they run, not the program that starts them.

    A "spawn" worker first imports its parent's main module (multiprocessing's rule), and
    the node's is the ``credex`` console script, which imports the whole CLI: most of a
    second of CPU per worker, at every node start and every ``credex ingest``. The workers
    need only this module, which the pickled calls name, so while they are started the
    main module is a bare one.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class SignatureWorkers:
    """A lazily started pool of processes that sign and verify slices of a batch at once."""

    def __init__(self, workers: int = 0, min_batch: int = MIN_BATCH) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.min_batch = min_batch
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # the executor is made from worker threads too
        self._ready = False

    @property
    def started(self) -> bool:
        return self._executor is not None

    async def verify(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        """For each (raw public key, signature, message): whether the signature is valid."""
        publics = [i[0] for i in items]
        signatures = [i[1] for i in items]
        messages = [i[2] for i in items]
        return await self._spread(
            len(items), lambda a, b: partial(valid_signatures, publics[a:b], signatures[a:b], messages[a:b])
        )

    async def sign(self, key: Ed25519PrivateKey, messages: Sequence[bytes]) -> list[bytes]:
        """The signatures of ``messages`` by ``key``, in order."""
        if len(messages) < self.min_batch or self.workers < 2:
            return await asyncio.to_thread(lambda: [key.sign(m) for m in messages])
        private = private_raw(key)
        return await self._spread(len(messages), lambda a, b: partial(signatures_of, private, messages[a:b]))

    async def _spread(self, n: int, part: Callable[[int, int], partial[list[_T]]]) -> list[_T]:
        """Run ``part(a, b)`` over slices of ``range(n)``, one per worker; the answers in order."""
        if n == 0:
            return []
        executor = self._pool() if n >= self.min_batch and self.workers >= 2 else None
        if executor is not None:
            size = -(-n // self.workers)
            loop = asyncio.get_running_loop()
            try:
                parts = await asyncio.gather(
                    *(loop.run_in_executor(executor, part(a, min(n, a + size))) for a in range(0, n, size))
                )
                return [answer for answers in parts for answer in answers]
            except BrokenProcessPool:
                log.warning("a signature worker died; replacing the pool and doing this batch in process")
                self._discard(executor)
        return await asyncio.to_thread(part(0, n))

    def _pool(self) -> ProcessPoolExecutor | None:
        """The pool once its workers answer; ``None`` (do it in process) while they start.

        Starting a worker is starting an interpreter: seconds on a loaded machine. No batch
        waits for that; the first large one starts the pool and is done in process.
        """
        with self._lock:
            if self._executor is None:
                # "spawn": the node runs threads (gRPC, executors) that a fork would copy half-way.
                executor = self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_outlive_no_parent,
                    initargs=(os.getpid(),),
                )
                self._ready = False
                with _without_main_module():  # each submit starts a worker here, while one is idle
                    waiting = [executor.submit(os.getpid) for _ in range(self.workers)]
                for future in waiting:
                    future.add_done_callback(lambda _: self._answered(executor, waiting))
                return None
            return self._executor if self._ready else None

    def _answered(self, executor: ProcessPoolExecutor, waiting: list[Future[int]]) -> None:
        """A worker answered its first call; once all have, batches go to them. One that fails to
        start leaves the pool unready: batches go on in process, and the warning says why."""
        with self._lock:
            if self._executor is not executor or not all(f.done() for f in waiting):
                return
            failed = next((f.exception() for f in waiting if f.exception() is not None), None)
            if failed is None:
                self._ready = True
                return
        log.warning("signature workers did not start (%s); signing and verifying in process", failed)

    @property
    def ready(self) -> bool:
        """Whether batches now go to the workers (they were started and have answered)."""
        return self._ready

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor, self._ready = None, False
        executor.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Stop the workers and wait for them; a later batch starts new ones (a node stopped and started again)."""
        with self._lock:
            executor, self._executor, self._ready = self._executor, None, False
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
