"""The node's loops stop when they are cancelled, even when the cancellation meets a wakeup or an
error from below.

On Python 3.11 ``asyncio.wait_for`` loses a cancellation that arrives in the same turn
of the loop as the result it waits for. A relay idling on its wakeup event went on
publishing after its node was stopped, and the stop gave up on it after 30 s (a CI
run of ``test_node_lifecycle``). These tests hold the waits the loops use to never
losing one, whatever turn of the loop it comes in.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from credex.node.cancellation import cancel_and_wait, pause, wait_for_event


@pytest.mark.parametrize("turns", range(6))
async def test_a_wait_cancelled_as_its_event_is_set_ends_cancelled(turns: int) -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_for_event(event, 3600))
    await asyncio.sleep(0)  # it waits
    event.set()
    for _ in range(turns):  # the wakeup travels through the loop; cancel at each step of the way
        await asyncio.sleep(0)
    if waiting.cancel():  # a cancellation the task took must end it; one refused came after it returned
        with pytest.raises(asyncio.CancelledError):
            await waiting
    else:
        assert waiting.result() is True


async def test_a_wait_says_whether_its_event_was_set_or_the_time_ran_out() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0) is False
    event.set()
    assert await wait_for_event(event, 3600) is True


async def test_a_pause_after_a_swallowed_cancellation_raises_it_again() -> None:
    """What a library below swallowed (or turned into an error) does not buy a loop another try."""
    tries = 0

    async def retrying_loop() -> None:
        nonlocal tries
        while True:
            tries += 1
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # a library call that swallows its cancellation
            await pause(0)

    loop = asyncio.create_task(retrying_loop())
    await asyncio.sleep(0)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert tries == 1


async def swallow_a_cancellation(waiting: asyncio.Event) -> None:
    """What aiokafka's client close() does: wait (after setting ``waiting``), and return when cancelled."""
    with contextlib.suppress(asyncio.CancelledError):
        waiting.set()
        await asyncio.Event().wait()


async def test_a_wait_entered_after_a_swallowed_cancellation_raises_it_at_once() -> None:
    entered = asyncio.Event()

    async def idle_loop() -> None:
        await swallow_a_cancellation(entered)
        await wait_for_event(asyncio.Event(), 3600)

    loop = asyncio.create_task(idle_loop())
    await entered.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop


async def test_cancelling_what_a_loop_started_waits_for_it_to_end_and_keeps_the_loops_own_cancellation() -> None:
    """Its tasks' cancellations end there; one that came for the loop meanwhile is raised once they have ended."""
    cleaning, may_finish = asyncio.Event(), asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await may_finish.wait()  # a cleanup that takes a while, as a commit or a consumer's close does

    async def loop() -> None:
        child = asyncio.create_task(slow_to_end())
        await asyncio.sleep(0)
        await cancel_and_wait(child, None)
        assert child.done()

    may_finish.set()
    await loop()  # nobody cancelled the loop: its child's cancellation is not its own, and it returns
    cleaning.clear()
    may_finish.clear()

    stopped = asyncio.create_task(loop())
    await cleaning.wait()
    stopped.cancel()  # the loop is stopped while its child cleans up
    await asyncio.sleep(0)
    assert not stopped.done()  # it waits for the child to end
    may_finish.set()
    with pytest.raises(asyncio.CancelledError):
        await stopped


async def test_what_a_cancelled_task_failed_with_is_raised_to_the_loop() -> None:
    async def fails_as_it_ends() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise ConnectionResetError("the store went away")

    child = asyncio.create_task(fails_as_it_ends())
    await asyncio.sleep(0)
    with pytest.raises(ConnectionResetError, match="the store went away"):
        await cancel_and_wait(child)
