"""The embedded PostgreSQL is started with memory for a node's store, and starts without it rather than not at all."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from credex.node import embedded
from credex.node.embedded import TUNING_FILE, EmbeddedPostgres, embedded_settings

GIB = 1 << 30


def test_shared_buffers_are_a_quarter_of_memory_between_the_default_and_8_gb() -> None:
    assert embedded_settings(24 * GIB) == {"shared_buffers": "6144MB"}
    assert embedded_settings(256 * (1 << 20)) == {"shared_buffers": "128MB"}  # never below PostgreSQL's default
    assert embedded_settings(256 * GIB) == {"shared_buffers": "8192MB"}


def test_the_sessions_server_runs_with_the_tuned_settings(postgres: EmbeddedPostgres) -> None:
    assert postgres._setting("shared_buffers") == embedded_settings()["shared_buffers"]
    assert (postgres.directory / TUNING_FILE).is_file()


def test_a_server_already_tuned_starts_once(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data")
    server.start()
    server.stop()
    starts = (tmp_path / "data" / "log").read_text().count("database system is ready to accept connections")
    server.start()
    try:
        assert server._setting("shared_buffers") == embedded_settings()["shared_buffers"]
        log = (tmp_path / "data" / "log").read_text()
        assert log.count("database system is ready to accept connections") == starts + 1
    finally:
        server.stop()


def test_settings_the_server_cannot_start_with_are_dropped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embedded, "embedded_settings", lambda: {"shared_buffers": "100000000MB"})
    server = EmbeddedPostgres(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="credex.node.embedded"):
        server.start()
    try:
        assert server._setting("shared_buffers") == "128MB"
        assert not (tmp_path / "data" / TUNING_FILE).exists()
        assert any("did not start with" in r.getMessage() for r in caplog.records)
    finally:
        server.stop()
