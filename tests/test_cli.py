"""The ``credex`` command line, as an operator uses it: keys, trust bundle, sample data, ingest, a node, lookups."""

from __future__ import annotations

import csv
import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from credex.adapters.samples import synth
from credex.domain.normalize import parse_date
from credex.node.cli import app
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres

from .conftest import TestFederation

runner = CliRunner()
CREDEX = [sys.executable, "-m", "credex.node.cli"]


def invoke(*args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_keys_and_trust_bundle_commands_build_a_bundle_a_node_accepts(tmp_path: Path) -> None:
    invoke("keys", "init", "--dir", str(tmp_path / "federation"))
    invoke("keys", "init", "--dir", str(tmp_path / "sh"))
    refused = runner.invoke(app, ["keys", "init", "--dir", str(tmp_path / "sh")])
    assert refused.exit_code == 1 and "already exists" in refused.output
    draft = tmp_path / "draft.json"
    invoke("trust", "new", str(draft), "--federation", "yrd")
    invoke(
        "trust",
        "add-member",
        str(draft),
        "--origin",
        "310000",
        "--name",
        "上海市",
        "--endpoint",
        "127.0.0.1:50051",
        "--public-key",
        str(tmp_path / "sh" / "signing.pub"),
    )
    signed = tmp_path / "bundle.json"
    invoke("trust", "sign", str(draft), "--key", str(tmp_path / "federation" / "signing.key"), "--out", str(signed))
    out = invoke("trust", "verify", str(signed), "--federation-key", str(tmp_path / "federation" / "signing.pub"))
    assert "OK: yrd version 2" in out and "310000 上海市" in out
    wrong = runner.invoke(
        app, ["trust", "verify", str(signed), "--federation-key", str(tmp_path / "sh" / "signing.pub")]
    )
    assert wrong.exit_code == 1 and "not signed by the federation key" in wrong.output


def test_synth_writes_the_rows_it_reports(tmp_path: Path) -> None:
    out = invoke("synth", str(tmp_path / "x.csv"), "--region", "340000", "--rows", "300", "--bad-share", "0.1")
    assert "300 rows" in out
    assert len((tmp_path / "x.csv").read_text(encoding="utf-8").splitlines()) == 301


def test_synth_decides_its_rows_in_the_year_before_the_day_it_is_given_and_is_the_same_file_for_it(
    tmp_path: Path,
) -> None:
    for name in ("a.csv", "b.csv"):
        invoke("synth", str(tmp_path / name), "--rows", "50", "--bad-share", "0", "--as-of", "2025-03-01")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    with (tmp_path / "a.csv").open(encoding="utf-8") as handle:
        decided = {parse_date(row["CF_JDRQ"]) for row in csv.DictReader(handle)}  # written as platforms write dates
    assert len(decided) > 1 and all(day and dt.date(2024, 3, 1) <= day < dt.date(2025, 3, 1) for day in decided)
    refused = CliRunner().invoke(app, ["synth", str(tmp_path / "c.csv"), "--as-of", "1 March"])
    assert refused.exit_code != 0 and "--as-of '1 March' is not a date YYYY-MM-DD" in refused.output
    assert not (tmp_path / "c.csv").exists()


def test_ingest_prints_the_balance_of_every_file_and_fails_on_broken_ones(
    tmp_path: Path, postgres: EmbeddedPostgres
) -> None:
    federation = TestFederation(tmp_path / "fed", ["310000"], postgres, broker=None)  # type: ignore[arg-type]
    federation.prepare()
    good = tmp_path / "good.csv"
    summary = synth.write(good, synth.SynthSpec(region="310000", rows=120, bad_share=0.1))
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not a workbook")
    env = {"CREDEX_DATABASE__URL": federation.database_url("310000")}
    config = str(federation.layout.config_path("310000"))
    result = runner.invoke(app, ["ingest", "--config", config, str(good), str(broken)], env=env)
    assert result.exit_code == 1
    accepted = summary.rows - summary.bad
    assert f"120 rows in / {accepted} accepted / {summary.bad} quarantined" in result.output
    assert "broken.xlsx" in result.output and "nothing of broken.xlsx was taken in" in result.output
    again = invoke("ingest", "--config", config, str(good), env=env)
    assert "already taken in" in again


def test_a_node_process_serves_lookups_and_stops_cleanly_on_sigterm(
    tmp_path: Path, postgres: EmbeddedPostgres, broker: EmbeddedBroker
) -> None:
    federation = TestFederation(tmp_path / "fed", ["310000", "320000"], postgres, broker)
    federation.prepare()
    env = federation.node_env("310000")
    config = str(federation.layout.config_path("310000"))
    sample = tmp_path / "p.csv"
    summary = synth.write(sample, synth.SynthSpec(region="310000", rows=40, bad_share=0.0, shared_share=0.5))
    subprocess.run([*CREDEX, "ingest", "--config", config, str(sample)], env=env, check=True, capture_output=True)
    process = subprocess.Popen(
        [*CREDEX, "node", "run", "--config", config], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert "ready" in ready, process.stderr.read() if process.stderr else ready
        subject = sorted(summary.shared_subjects)[0]
        port = ready.strip().rsplit(" ", 1)[1]
        looked_up = subprocess.run(
            [*CREDEX, "lookup", subject, "--node", f"127.0.0.1:{port}", "--config", config],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert looked_up.returncode == 0, looked_up.stderr
        assert "✓ verified" in looked_up.stdout and subject in looked_up.stdout
        healthy = subprocess.run(
            [*CREDEX, "health", "--config", config], check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert healthy.returncode == 0 and "SERVING" in healthy.stdout, healthy.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = process.wait(timeout=30)
    assert code == 0
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ingest", "--config", "/nonexistent/node.toml", "x.csv"], "cannot read config"),
        (["synth", "out.csv", "--kind", "grades"], "--kind is penalty or licence"),
        (["trust", "verify", "/nonexistent.json", "--federation-key", "/nonexistent.pub"], "cannot read"),
    ],
)
def test_mistakes_on_the_command_line_are_explained(args: list[str], says: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert says in result.output
