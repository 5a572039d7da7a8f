"""ID numbers reach the CLI without sitting in `ps` or shell history.

`--person -` types the number hidden at a terminal or reads it from a pipe; `--person @FILE`
reads one number per line; a number given as the argument still works and says, on stderr,
where else it went. A file that cannot be read is named in the error, its content never.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from credex.crypto.pseudonym import Pseudonymizer
from credex.node.cli import app

NUMBER = "11010519491231002X"
OTHER = "110105194912310037"


def pseudonym(key: Path, number: str = NUMBER) -> str:
    return Pseudonymizer.load(key).pseudonym(number)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "pseudonym.key"
    Pseudonymizer.create(path)
    return path


def run(*args: str, stdin: str | None = None, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "400"})
    assert result.exit_code == code, result.output
    return result.stdout, result.stderr


def test_a_piped_number_gives_the_pseudonym_and_is_never_printed(key: Path) -> None:
    out, err = run("checks", "pseudonym", "--pseudonym-key", str(key), stdin=f"{NUMBER}\n")
    assert out.strip().splitlines()[-1] == pseudonym(key)
    assert NUMBER not in out + err


def test_a_number_typed_at_a_terminal_is_not_echoed(key: Path) -> None:
    """The hidden prompt really hides: what the terminal shows holds no digit of the number."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "credex.node.cli", "checks", "pseudonym", "--pseudonym-key", str(key)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
        # No controlling terminal: the prompt cannot open the /dev/tty of whatever runs the tests,
        # so it turns echo off on its stdin, this pty.
        start_new_session=True,
    )
    os.close(terminal)
    shown = b""
    typed = False
    deadline = time.monotonic() + 280  # a bound on a hang, not a timing expectation
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        # Typed only once the prompt has turned echo off: it flushes what was typed before.
        if not typed and b"resident ID number" in shown and not termios.tcgetattr(controller)[3] & termios.ECHO:
            os.write(controller, f"{NUMBER}\n".encode())
            typed = True
        if process.poll() is not None and not ready:
            break
    process.wait(timeout=600)
    os.close(controller)
    text = shown.decode(errors="replace")
    assert process.returncode == 0, text
    assert typed and pseudonym(key) in text
    assert NUMBER[:6] not in text


def test_check_reads_numbers_from_a_pipe_or_a_file_and_warns_about_one_given_as_an_argument(tmp_path: Path) -> None:
    from credex.node.cli.person_ids import EXPOSED_WARNING, read_person_ids

    listed = tmp_path / "persons.txt"
    listed.write_text(f"\n {OTHER} \n\n{NUMBER}\n", encoding="utf-8")
    runner = CliRunner()

    def read(values: list[str], stdin: str | None = None) -> tuple[list[str], str]:
        got: list[list[str]] = []
        probe = typer.Typer()

        @probe.command()
        def main(person: list[str]) -> None:
            got.append(read_person_ids(person))

        result = runner.invoke(probe, values, input=stdin)
        assert result.exit_code == 0, result.output
        return got[0], result.stderr

    assert read([f"@{listed}"]) == ([OTHER, NUMBER], "")
    assert read(["-"], stdin=f"{NUMBER}\n{OTHER}\n") == ([NUMBER, OTHER], "")
    numbers, warned = read([NUMBER, f"@{listed}"])
    assert numbers == [NUMBER, OTHER, NUMBER]
    assert EXPOSED_WARNING in warned and NUMBER not in warned


@pytest.mark.parametrize(
    ("given", "stdin", "words"),
    [
        (["-", "-"], "x\n", "can be given once"),
        (["-"], "", "stdin was empty"),
        (["@{missing}"], None, "cannot read ID numbers from"),
        (["@{binary}"], None, "UnicodeDecodeError"),
        (["@{blank}"], None, "holds no ID numbers"),
    ],
)
def test_unreadable_sources_are_refused_naming_the_source_never_its_content(
    tmp_path: Path, given: list[str], stdin: str | None, words: str
) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + NUMBER.encode())
    (tmp_path / "blank").write_text("\n  \n", encoding="utf-8")
    paths = {name: str(tmp_path / name) for name in ("missing", "binary", "blank")}
    options: list[str] = []
    for value in given:
        options += ["--person", value.format(**paths)]
    base = ["check", "--scenario", "政府采购", "--unit", "91310000MA1FL0000X", "--node", "127.0.0.1:9"]
    result = CliRunner().invoke(app, [*base, *options], input=stdin, env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert words in result.output and NUMBER not in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["lookup", "--person", "{source}", "--node", "127.0.0.1:9"],
        ["checks", "of", "--person", "{source}", "--node", "127.0.0.1:9"],
        [
            *("authorization", "grant", "AUTH-1", "--node", "127.0.0.1:9", "--subject", "{source}"),
            *("--grantee", "x", "--document", "auth.pdf", "--valid-until", "2027-01-01"),
        ],
    ],
)
def test_every_command_that_takes_a_persons_number_reads_it_from_a_file_or_stdin(
    tmp_path: Path, command: list[str]
) -> None:
    """Each command reads ``@FILE`` and ``-`` the one way: refused, naming the source, before any node is asked."""
    missing = str(tmp_path / "missing")
    refused = CliRunner().invoke(app, [part.format(source=f"@{missing}") for part in command], env={"COLUMNS": "400"})
    assert refused.exit_code == 2, refused.output
    assert f"cannot read ID numbers from {missing}" in refused.output
    empty = CliRunner().invoke(app, [part.format(source="-") for part in command], input="", env={"COLUMNS": "400"})
    assert empty.exit_code == 2, empty.output
    assert "stdin was empty" in empty.output
