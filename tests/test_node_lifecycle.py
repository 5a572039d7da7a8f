"""Stopping a node: every task it started ends when asked, at whatever moment of its life it is asked.

A task that swallows its cancellation (aiokafka can, while it bootstraps) would hold
a database connection and hang the node's stop for ever; ``Node.stop`` names such a
task in an error and goes on, and these tests say that never happens.
"""

from __future__ import annotations

import logging

import pytest

from .conftest import TestFederation


async def test_a_node_stopped_right_after_it_started_stops_every_task(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="credex.node.runtime")
    for _ in range(8):
        await federation.start_node("310000")
        await federation.stop_node("310000")  # intake, relay and sync are still connecting
    assert stuck_stops(caplog) == []


async def test_a_node_stopped_while_it_exchanges_with_its_peers_stops_every_task(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="credex.node.runtime")
    await federation.start_node("310000")
    await federation.start_node("320000")
    await federation.stop()
    assert stuck_stops(caplog) == []


def stuck_stops(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What ``Node.stop`` said about tasks or steps that did not end when asked."""
    return [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage() or "took over" in r.getMessage()]
