"""Waiting that never loses a cancellation: the node's long-running loops stop when they are told to.

On Python 3.11 ``asyncio.wait_for`` returns the result of what it waited for when
that finished in the same turn of the loop as a cancellation of the waiting task;
the cancellation is lost (CPython gh-86296, fixed in 3.12). A relay idling on
``wait_for(wakeup.wait(), 0.1)`` that was woken by a NOTIFY as its node stopped
went on publishing, and the stop gave up on it after 30 s. Libraries below us can
lose one too: aiokafka's client ``close()`` awaits its metadata task under
``suppress(CancelledError)``, so a loop cancelled while it closes an admin client
or a consumer carries on as if nothing happened.

So the loops wait through :func:`wait_for_event` (``asyncio.timeout``, which
counts cancellations) and pause through :func:`pause`, and a loop that need not
wait calls :func:`raise_if_cancelling`: each first re-raises a cancellation that
something below swallowed, since a task that was asked to stop and is still
running has ``cancelling()`` above zero.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def raise_if_cancelling() -> None:
    """Re-raise a cancellation of the running task that an inner ``await`` swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """Sleep between two tries of a loop; a loop asked to stop stops here instead of trying again."""
    raise_if_cancelling()
    await asyncio.sleep(seconds)


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; whether it was set. A cancellation always wins."""
    raise_if_cancelling()
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel each of ``tasks`` and wait until it has ended; what a task failed with is raised.

    Their cancellations end here, the caller's does not: awaiting a task being cancelled
    raises CancelledError whoever was cancelled, so one that came for the caller meanwhile
    is raised once every task has ended.
    """
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    raise_if_cancelling()
