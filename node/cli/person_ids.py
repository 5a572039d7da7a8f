"""Resident ID numbers given to the CLI without leaving them in `ps` or the shell's history.

An argument on a command line is readable by every user of the host (``/proc/PID/cmdline``) and
is kept in shell history files. So ``--person -`` asks for the number hidden at a terminal (or
reads one number per line from a pipe), and ``--person @FILE`` reads one number per line from a
file the caller can keep private. A number typed as the argument itself still works, for
scripts that already do so, but says once on stderr where else it went.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import typer

HIDDEN = "-"
FROM_FILE = "@"
EXPOSED_WARNING = (
    "warning: an ID number given on the command line shows in `ps` and in your shell's history; "
    "give --person - to type it hidden (or pipe it in), or --person @FILE"
)


def read_person_ids(values: Iterable[str], *, option: str = "--person") -> list[str]:
    """The ID numbers the values name, in order: literal, ``-`` (hidden prompt or stdin) or ``@FILE``."""
    numbers: list[str] = []
    stdin_read = False
    exposed = False
    for value in values:
        if value == HIDDEN:
            if stdin_read:
                raise typer.BadParameter("'-' (read from the terminal or stdin) can be given once", param_hint=option)
            stdin_read = True
            numbers.extend(_from_stdin(option))
        elif value.startswith(FROM_FILE):
            numbers.extend(_from_file(Path(value[len(FROM_FILE) :]), option))
        else:
            numbers.append(value)
            exposed = True
    if exposed:
        typer.echo(EXPOSED_WARNING, err=True)
    return numbers


def read_person_id(value: str, *, option: str = "--person") -> str:
    """One ID number, for commands about a single subject; empty stays empty."""
    if not value:
        return ""
    numbers = read_person_ids([value], option=option)
    if len(numbers) != 1:
        raise typer.BadParameter(f"one ID number is needed here, {len(numbers)} were given", param_hint=option)
    return numbers[0]


def _from_stdin(option: str) -> list[str]:
    if sys.stdin.isatty():
        return [typer.prompt("resident ID number", hide_input=True).strip()]
    numbers = _lines(sys.stdin.read())
    if not numbers:
        raise typer.BadParameter("'-' reads ID numbers from stdin, and stdin was empty", param_hint=option)
    return numbers


def _from_file(path: Path, option: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # The reason, never the content: a file of ID numbers is not echoed back.
        reason = type(exc).__name__
        raise typer.BadParameter(f"cannot read ID numbers from {path}: {reason}", param_hint=option) from None
    numbers = _lines(text)
    if not numbers:
        raise typer.BadParameter(f"{path} holds no ID numbers (one per line)", param_hint=option)
    return numbers


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
