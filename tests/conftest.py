"""Fixtures: real PostgreSQL and a real Kafka-protocol broker, started as the embedded default starts them.

One PostgreSQL server serves the whole session (each test gets fresh databases);
each test that needs a broker gets its own, because the broker's memory log is
part of what a test sets up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from credex.node.demo.federation import LocalFederation
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.runtime import Node

logging.getLogger("aiokafka").setLevel(logging.ERROR)
# The fixtures fork pg_ctl while gRPC threads run; gRPC's fork handlers are not needed for that.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# Property tests judge behaviour, never speed: Hypothesis's 200 ms deadline per example is wall time, and one
# stall of a busy 2-core machine would fail a test that is right.
settings.register_profile("credex", deadline=None)
settings.load_profile("credex")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path / "broker") as running:
        yield running


class TestFederation(LocalFederation):
    """A local federation whose nodes share the session's PostgreSQL and the test's broker."""

    __test__ = False

    def __init__(self, root: Path, origins: list[str], postgres: EmbeddedPostgres, broker: EmbeddedBroker) -> None:
        super().__init__(root, origins, tls=True)
        self.postgres = postgres
        self.broker = broker
        self.db_prefix = "t" + uuid.uuid4().hex[:10]

    def database_url(self, origin: str) -> str:
        return self.postgres.uri(f"{self.db_prefix}_{origin}")

    def overrides(self, origin: str, **extra: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "database": {"url": self.database_url(origin)},
            "bus": {"bootstrap_servers": self.broker.bootstrap_servers},
            "sync": {"probe_seconds": 0.5},
            "relay": {"idle_poll_seconds": 0.1, "broker_check_seconds": 1.0},
            "checkpoint": {"every_seconds": 0.5},
            "intake": {"fetch_wait_ms": 100},
            # Off unless a test turns it on: sample data is dated from a fixed day (synth.DEFAULT_ANCHOR), and a
            # node that starts, or passes 01:00 in China, expires whatever window has ended since, signing events
            # that a test counting its own did not make.
            "expiry": {"enabled": False},
        }
        for key, value in extra.items():
            if isinstance(value, dict):
                settings.setdefault(key, {}).update(value)
            else:
                settings[key] = value
        return settings

    async def start_node(self, origin: str, **extra: Any) -> Node:
        return await super().start_node(origin, **self.overrides(origin, **extra))

    def node_env(self, origin: str, **extra: Any) -> dict[str, str]:
        """The environment of ``credex node run`` for ``origin`` as a process of its own: the settings above, as
        CREDEX_SECTION__KEY variables, so that a node in a subprocess is set up as one in the test's loop."""
        env = dict(os.environ)
        for section, values in self.overrides(origin, **extra).items():
            for key, value in values.items():
                env[f"CREDEX_{section.upper()}__{key.upper()}"] = (
                    str(value).lower() if isinstance(value, bool) else str(value)
                )
        return env


@pytest.fixture
async def federation(
    tmp_path: Path, postgres: EmbeddedPostgres, broker: EmbeddedBroker
) -> AsyncIterator[TestFederation]:
    built = TestFederation(tmp_path / "federation", ["310000", "320000", "330000"], postgres, broker)
    built.prepare()
    yield built
    await built.stop()


async def eventually(check: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll an async predicate until it returns a truthy value; fail with its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
