"""Intake's Kafka offset commits are bounded: a commit the broker does not confirm in time restarts the consumer.

A commit that cannot finish in time is forced with a commit timeout no broker round trip fits in
(one nanosecond), so the test depends on no speed of broker or machine: every commit of intake
times out, every time. (aiokafka still finishes a commit request it has sent, so whether the
restarted consumer reads some messages again is up to the broker; if it does, they are replays.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from credex.node.runtime import Node

from .conftest import TestFederation, eventually
from .trust_support import take_in

NEVER_IN_TIME = 1e-9  # seconds: shorter than any network round trip


async def test_a_commit_that_does_not_finish_in_time_restarts_the_consumer_which_reads_on(
    federation: TestFederation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="credex.node.intake")
    publisher = await federation.start_node("310000")
    receiver = await federation.start_node("320000", intake={"commit_timeout_seconds": NEVER_IN_TIME})

    def restarts() -> int:
        return sum(
            "offset commit did not finish" in r.getMessage() and "restarting the consumer" in r.getMessage()
            for r in caplog.records
        )

    async def held_after_restarts(size: int, more_than: int) -> int | None:
        return restarts() if await _holds(receiver, size) and restarts() > more_than else None

    first = await take_in(publisher, tmp_path, 20)
    after_first = await eventually(lambda: held_after_restarts(first, 0))
    # A new consumer took over: what comes next is read by it, and its commit times out in turn.
    second = await take_in(publisher, tmp_path, 10, first_row=1000)
    await eventually(lambda: held_after_restarts(first + second, after_first))

    seen = (await receiver.status()).intake_counters["310000"]
    assert seen["applied"] == first + second  # whatever was read again, nothing was applied twice


async def _holds(node: Node, size: int) -> bool:
    return (await node.status()).contiguous_by_origin.get("310000", 0) >= size
