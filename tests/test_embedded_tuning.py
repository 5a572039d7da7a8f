"""The embedded PostgreSQL gets memory for a node's store, safely, and starts without it rather than not at all."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from credex.node import embedded_tuning as tuning
from credex.node.embedded import EmbeddedPostgres, EmbeddedServiceError
from credex.node.embedded_tuning import TUNING_FILE

MIB, GIB = 1 << 20, 1 << 30
READY = "database system is ready to accept connections"
MACHINES = tuning.shared_buffers  # the size for this machine, before a test fixes its own
SIZE = 200 * MIB  # what the tests start servers with: above the default whatever the host's memory


@pytest.fixture(autouse=True)
def _sized(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "shared_buffers", lambda: SIZE)


def _starts(directory: Path) -> int:
    return (directory / "log").read_text().count(READY)


def _buffers(server: EmbeddedPostgres) -> int:
    return tuning.running_shared_buffers(server.uri("postgres"))[0]


def _started_once(data: Path) -> EmbeddedPostgres:
    """A server of ``data``, started once (and so tuned) and stopped."""
    server = EmbeddedPostgres(data)
    server.start()
    server.stop()
    return server


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_shared_buffers_are_a_quarter_of_memory_between_the_default_and_8_gb() -> None:
    assert MACHINES(24 * GIB) == 6 * GIB
    assert MACHINES(256 * MIB) == 128 * MIB  # never below PostgreSQL's default
    assert MACHINES(256 * GIB) == 8 * GIB
    assert tuning.usable_memory() <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_memory_limit_on_the_process_cgroup_or_above_it_counts(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    (v2 / "system.slice" / "credex.service").mkdir(parents=True)
    (v2 / "system.slice" / "credex.service" / "memory.max").write_text("max\n")
    (v2 / "system.slice" / "memory.max").write_text(f"{2 * GIB}\n")
    (tmp_path / "cgroup2").write_text("0::/system.slice/credex.service\n")
    assert tuning._cgroup_limits(tmp_path / "cgroup2", v2) == [2 * GIB]
    v1 = tmp_path / "v1"
    (v1 / "memory" / "docker" / "abc").mkdir(parents=True)
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{GIB}\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "cgroup1").write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    assert min(tuning._cgroup_limits(tmp_path / "cgroup1", v1)) == GIB
    assert tuning._cgroup_limits(tmp_path / "none", v1) == []


def test_the_sessions_server_runs_with_the_tuned_size(postgres: EmbeddedPostgres) -> None:
    assert _buffers(postgres) == MACHINES()


def test_a_tuned_server_is_not_restarted_again_whatever_the_operators_psqlrc_says(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    psqlrc = tmp_path / "psqlrc"
    psqlrc.write_text("\\timing on\n")
    monkeypatch.setenv("PSQLRC", str(psqlrc))
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=1")
    server = _started_once(data)
    starts = _starts(data)
    with server:
        assert _buffers(server) == SIZE
        assert _starts(data) == starts + 1


def test_a_server_another_handle_of_this_process_holds_is_not_restarted(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedPostgres(data) as first:
        starts = _starts(data)
        monkeypatch.setattr(tuning, "shared_buffers", lambda: 300 * MIB)
        with EmbeddedPostgres(data) as second:
            assert _starts(data) == starts
            assert _buffers(first) == _buffers(second) != 300 * MIB


def test_the_setting_is_the_servers_own_file_whatever_the_umask(data: Path) -> None:
    server = EmbeddedPostgres(data)
    before = os.umask(0o077)
    try:
        server.start()
    finally:
        os.umask(before)
    try:
        assert _buffers(server) == SIZE
        written = (data / TUNING_FILE).stat()
        assert written.st_uid == data.stat().st_uid and written.st_mode & 0o777 == 0o600
    finally:
        server.stop()


def test_a_link_planted_at_the_settings_name_is_replaced_never_written_through(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _started_once(data)
    victim = data / "elsewhere.conf"  # a file the server reads, so it starts through the link
    victim.write_text("# another file, that whoever owns the server's folder wants overwritten\n")
    (data / TUNING_FILE).unlink()
    (data / TUNING_FILE).symlink_to(victim)
    monkeypatch.setattr(tuning, "shared_buffers", lambda: 300 * MIB)
    with server:
        assert _buffers(server) == 300 * MIB
        assert victim.read_text().startswith("# another file")
        assert not (data / TUNING_FILE).is_symlink()


def test_a_link_to_a_file_the_server_cannot_read_costs_one_start_without_the_setting(
    data: Path, tmp_path: Path
) -> None:
    server = _started_once(data)
    victim = tmp_path / "victim"
    victim.write_text("not PostgreSQL's\n")
    os.chmod(victim, 0o600)
    (data / TUNING_FILE).unlink()
    (data / TUNING_FILE).symlink_to(victim)
    server.start()  # the server cannot read through the link: it starts without it, and the link is gone
    server.stop()
    assert not (data / TUNING_FILE).is_symlink()
    with server:
        assert _buffers(server) == SIZE
        assert victim.read_text() == "not PostgreSQL's\n"


def test_a_size_the_operator_set_with_alter_system_is_kept(data: Path) -> None:
    server = EmbeddedPostgres(data)
    with server:
        tuning._psql(server.uri("postgres"), "ALTER SYSTEM SET shared_buffers = '160MB'")
    server.start()  # the operator's setting comes into force at this restart
    server.stop()
    starts = _starts(data)
    with server:
        assert _buffers(server) == 160 * MIB
        assert _starts(data) == starts + 1


def test_a_size_the_server_cannot_start_with_is_dropped_with_a_warning(
    data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tuning, "shared_buffers", lambda: 100_000_000 * MIB)  # beyond what PostgreSQL accepts
    server = EmbeddedPostgres(data)
    with caplog.at_level(logging.WARNING, logger="credex.node.embedded"), server:
        assert _buffers(server) == 128 * MIB
        assert not (data / TUNING_FILE).exists()
        assert any("did not start with credex's memory setting" in r.getMessage() for r in caplog.records)


def test_a_setting_left_by_a_node_killed_while_tuning_does_not_keep_the_next_from_starting(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = _started_once(data)
    (data / TUNING_FILE).write_text("shared_buffers = '100000000000MB'\n")
    with caplog.at_level(logging.WARNING, logger="credex.node.embedded"), server:
        assert _buffers(server) == 128 * MIB
        assert any("did not start with credex's memory setting" in r.getMessage() for r in caplog.records)


def test_a_postgresql_conf_that_is_not_the_servers_plain_file_is_not_written_to(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _started_once(data)
    conf = data / "postgresql.conf"
    target = data / "real.conf"
    conf.rename(target)
    conf.symlink_to(target.name)
    before = target.read_bytes()
    monkeypatch.setattr(tuning, "shared_buffers", lambda: 300 * MIB)
    server = EmbeddedPostgres(data)
    with caplog.at_level(logging.WARNING, logger="credex.node.embedded"), server:
        assert _buffers(server) == SIZE
        assert target.read_bytes() == before
        assert any("shared buffers are left at their size" in r.getMessage() for r in caplog.records)


def test_a_size_the_operator_sets_after_credexs_file_is_kept_without_a_restart(data: Path) -> None:
    _started_once(data)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = '150MB'\n")
    server = EmbeddedPostgres(data)
    server.start()  # the operator's size comes into force at this (first) restart
    server.stop()
    starts = _starts(data)
    with server:
        assert _buffers(server) == 150 * MIB
        assert _starts(data) == starts + 1


def test_a_start_that_fails_for_another_reason_keeps_the_setting_and_says_why(data: Path) -> None:
    _started_once(data)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("port = 'not a port'\n")
    with pytest.raises(EmbeddedServiceError):
        EmbeddedPostgres(data).start()
    assert (data / TUNING_FILE).is_file()
