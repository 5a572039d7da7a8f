"""Supervision of the node's background work: a task that dies is restarted or reported, never lost.

Each loop a node runs (relay, intake, sync, the checkpoint signer, bundle refresh,
evidence retention, every feed) catches the failures it expects and carries on.
What it did not expect used to end its task with a line in the log while the node
went on answering health checks as SERVING, with part of it dead. The supervisor
is that task's owner, as aiokafka's consumer is of its coordinator task:

- a task that fails (or returns: these loops are meant to run until the node
  stops) is restarted after a pause that doubles with each failure in a row;
- a run that lasted ``stable_after`` seconds counts as a success: the count of
  failures in a row starts again;
- after ``give_up_after`` failures in a row — or at once for work that is not
  safe to restart — the supervisor gives up: it logs why, calls ``on_failure``
  (the node sets its gRPC health to NOT_SERVING) and :meth:`Supervisor.failed`
  returns the error, so ``credex node run`` stops with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from credex.errors import CredexError
from credex.node.cancellation import raise_if_cancelling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restart:
    """When and how often a failed task is started again."""

    first_pause: float = 1.0  # seconds before the first restart; doubled for each failure in a row
    max_pause: float = 60.0
    stable_after: float = 60.0  # a run at least this long was a success: the failures in a row start again
    give_up_after: float = 8  # failures in a row after which the task is given up (math.inf: never)

    def pause(self, failures: int) -> float:
        return float(min(self.first_pause * 2 ** (failures - 1), self.max_pause))


NEVER = Restart(give_up_after=0)  # for work that is not safe to run again: the first failure is final


class TaskFailed(CredexError):
    """A background task of the node failed for good; the node no longer does all its work."""

    def __init__(self, task: str, cause: BaseException, failures: int) -> None:
        times = "" if failures <= 1 else f" ({failures} times in a row)"
        super().__init__(
            f"background task {task} failed{times}: {type(cause).__name__}: {cause}; the node no longer does"
            f" that work and reports NOT_SERVING. See the log above for the traceback, fix the cause, restart"
        )
        self.task = task
        self.cause = cause


class TaskEnded(CredexError):
    """A loop that should run until the node stops returned."""


class Supervisor:
    """Owns the background tasks of one node: starts, restarts, gives up and tells, stops."""

    def __init__(
        self,
        owner: str,
        on_failure: Callable[[TaskFailed], Awaitable[None]] | None = None,
        policy: Restart = Restart(),
    ) -> None:
        self.owner = owner
        self.policy = policy
        self.on_failure = on_failure
        self.restarts: dict[str, int] = {}  # task -> restarts since the node started
        self.failure: TaskFailed | None = None
        self._failed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, work: Callable[[], Awaitable[Any]], policy: Restart | None = None) -> None:
        """Run ``work()`` as a supervised task; ``work`` is called again for each restart."""
        task = asyncio.create_task(self._supervise(name, work, policy or self.policy), name=f"{self.owner}:{name}")
        self._tasks.append(task)

    async def failed(self) -> TaskFailed:
        """Wait until a task fails for good; return why."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    async def _supervise(self, name: str, work: Callable[[], Awaitable[Any]], policy: Restart) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                await work()
                cause: BaseException = TaskEnded(f"{name} returned; it should run until the node stops")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                cause = exc
            raise_if_cancelling()  # asked to stop while the work failed or returned: not a failure to restart
            if loop.time() - started >= policy.stable_after:
                failures = 0  # it worked for a good while: this failure is the first of a new series
            failures += 1
            if failures > policy.give_up_after:
                await self._give_up(TaskFailed(name, cause, failures))
                return
            pause = policy.pause(failures)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            limit = "" if math.isinf(policy.give_up_after) else f" of at most {policy.give_up_after}"
            log.error(
                "node %s: task %s failed (%s: %s); restarting it in %.1f s (failure %d in a row%s)",
                self.owner,
                name,
                type(cause).__name__,
                cause,
                pause,
                failures,
                limit,
                exc_info=cause,
            )
            await asyncio.sleep(pause)

    async def _give_up(self, failure: TaskFailed) -> None:
        log.critical("node %s: %s", self.owner, failure, exc_info=failure.cause)
        if self.failure is None:
            self.failure = failure
        if self.on_failure is not None:
            try:
                await self.on_failure(failure)
            except Exception:
                log.exception("node %s: reporting the failure of %s failed", self.owner, failure.task)
        self._failed.set()

    async def stop(self, timeout: float) -> None:
        """Cancel every task; name (with where it waits) any that does not stop within ``timeout``."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=timeout)
            for task in stuck:
                # A task that swallowed its cancellation would hang the stop for ever; name it and go on.
                log.error(
                    "node %s: task %s did not stop within %.0f s; leaving it behind. Where it waits:\n%s",
                    self.owner,
                    task.get_name(),
                    timeout,
                    _where(task),
                )
        self._tasks.clear()


def _where(task: asyncio.Task[Any]) -> str:
    """The task's frames down the chain of awaited coroutines, innermost last.

    ``Task.print_stack`` shows only the task's own coroutine, which for every
    supervised task is the same ``await work()``; the frame that waits is below it.
    """
    lines = [f"{task!r}, awaiting (outermost first):"]
    awaited: Any = task.get_coro()
    for _ in range(64):
        frame = getattr(awaited, "cr_frame", None)
        if frame is None:
            break
        lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}')
        awaited = awaited.cr_await
        if awaited is None:
            break
    if awaited is not None and not hasattr(awaited, "cr_frame"):
        lines.append(f"  waiting on {awaited!r}")
    return "\n".join(lines)
