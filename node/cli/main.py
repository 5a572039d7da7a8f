"""The ``credex`` command line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from credex.adapters import synth
from credex.adapters.profile import Profile, ProfileError
from credex.crypto.keys import KeyFileError, SigningKey, SigningRefused, key_id, load_public, public_raw
from credex.crypto.pseudonym import Pseudonymizer
from credex.crypto.tls import CertificateAuthority, CertificateError, spki_sha256
from credex.crypto.trust import Member, MemberKey, TrustBundle, TrustBundleError
from credex.domain.publicity import PublicityRules
from credex.node.config import ConfigError, NodeConfig, load_config
from credex.v1 import record_pb2

app = typer.Typer(help="credex: cross-region public-credit data exchange node", no_args_is_help=True)
node_app = typer.Typer(help="run a node", no_args_is_help=True)
keys_app = typer.Typer(help="signing keys", no_args_is_help=True)
trust_app = typer.Typer(help="the federation's trust bundle", no_args_is_help=True)
tls_app = typer.Typer(help="TLS material: the federation CA and the certificates it issues", no_args_is_help=True)
alarm_app = typer.Typer(help="equivocation alarms: evidence, and clearing it", no_args_is_help=True)
profile_app = typer.Typer(help="platform profiles: how rows map to records", no_args_is_help=True)
quality_app = typer.Typer(help="data quality per source unit", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(tls_app, name="tls")
app.add_typer(alarm_app, name="alarm")
app.add_typer(profile_app, name="profile")
app.add_typer(quality_app, name="quality")
app.add_typer(keys_app, name="keys")
app.add_typer(trust_app, name="trust")

# A pipe or CI log has no width; tables of Chinese text need more than rich's fallback of 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    # One line per error whatever the terminal's width, so scripts and logs can match on it.
    err.print(f"[red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


def _config(path: Path) -> NodeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


# -- demo and node -------------------------------------------------------------------


@app.command()
def demo(
    workdir: Annotated[Path | None, typer.Option(help="keep the federation here instead of a temporary folder")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a four-region federation on the embedded services and show cross-region lookups."""
    from credex.node.demo import run_demo

    _logging("INFO" if verbose else "ERROR")
    try:
        asyncio.run(run_demo(console, workdir.resolve() if workdir else None))
    except KeyboardInterrupt:
        err.print("interrupted; everything was shut down")
        raise typer.Exit(130) from None


@node_app.command("run")
def node_run(config: Annotated[Path, typer.Option("--config", "-c", help="node.toml")]) -> None:
    """Run a node until SIGTERM or Ctrl-C."""
    from credex.node.runtime import Node

    settings = _config(config)
    _logging(settings.log_level)

    async def main() -> None:
        node = Node(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await node.start()
        if settings.metrics_listen:
            from prometheus_client import start_http_server

            host, port = settings.metrics_listen.rsplit(":", 1)
            start_http_server(int(port), addr=host)
        print(f"node {settings.origin} ready on port {node.port}", flush=True)
        try:
            await stop.wait()
        finally:
            await node.stop()

    try:
        asyncio.run(main())
    except Exception as exc:
        raise _fail(f"node {settings.origin}: {exc}") from None


# -- ingest and lookup ----------------------------------------------------------------


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="platform export files (CSV, XLSX)")],
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's node.toml; its database is used")],
    profile: Annotated[str, typer.Option(help="profile name or .toml file")] = "national",
) -> None:
    """Take files in through a node's ledger: prints rows in / accepted / quarantined per file."""
    from credex.node.feeds import IngestError
    from credex.node.runtime import Node

    settings = _config(config)
    _logging("WARNING")
    try:
        chosen = Profile.load(profile)
    except ProfileError as exc:
        raise _fail(str(exc)) from None
    failures = 0

    async def main() -> None:
        nonlocal failures
        node = Node(settings)
        await node.start(serve=False, exchange=False)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as progress:
                for path in files:
                    task = progress.add_task(path.name, total=None)

                    def update(source: str, done: int, total: int, task: TaskID = task) -> None:
                        progress.update(task, completed=done, total=total or None, description=source)

                    try:
                        [report] = await node.ingest([path], chosen, progress=update)
                    except (IngestError, SigningRefused) as exc:
                        failures += 1
                        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
                        continue
                    finally:
                        progress.remove_task(task)
                    balance = (
                        f"{report.rows_in} rows in / {report.accepted} accepted / {report.quarantined} quarantined"
                    )
                    if report.already_taken:
                        console.print(f"{path}: already taken in ({balance}); nothing changed", soft_wrap=True)
                        continue
                    console.print(
                        f"{path}: {balance} — {report.new} new, {report.corrected} corrected, "
                        f"{report.unchanged} unchanged",
                        soft_wrap=True,
                    )
                    for reason, n in report.reasons.most_common():
                        console.print(f"    quarantined {n:>6} × {reason}")
        finally:
            await node.stop()

    asyncio.run(main())
    if failures:
        raise typer.Exit(1)


# Options shared by every command that talks to a node or checks signatures.
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="a node.toml: trust bundle and TLS")]
BundleOption = Annotated[Path | None, typer.Option(help="signed trust bundle (if no --config)")]
FederationKeyOption = Annotated[Path | None, typer.Option(help="federation public key (if no --config)")]
CaOption = Annotated[Path | None, typer.Option(help="federation CA for TLS")]
CertOption = Annotated[Path | None, typer.Option(help="client certificate")]
KeyOption = Annotated[Path | None, typer.Option(help="client key")]


def _trust_and_tls(
    config: Path | None,
    bundle: Path | None,
    federation_key: Path | None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> tuple[TrustBundle, tuple[Path, Path, Path] | None]:
    """The verified trust bundle and the client TLS files, from a node config or explicit files."""
    if config is not None:
        settings = _config(config)
        bundle, federation_key = bundle or settings.trust.bundle, federation_key or settings.trust.federation_public_key
        tls = settings.grpc.tls
        ca, cert, key = ca or tls.client_ca, cert or tls.cert, key or tls.key
    if bundle is None or federation_key is None:
        raise _fail("give --config, or --bundle and --federation-key, to check signatures")
    try:
        trust = TrustBundle.load_signed(bundle, load_public(federation_key))
    except (TrustBundleError, KeyFileError) as exc:
        raise _fail(str(exc)) from None
    return trust, ((ca, cert, key) if ca and cert and key else None)


@app.command()
def lookup(
    uscc: Annotated[str, typer.Argument(help="统一社会信用代码")],
    node: Annotated[str, typer.Option(help="host:port of any node")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask a node for a subject's profile and check every origin's signature yourself."""
    import grpc
    from google.protobuf.json_format import MessageToDict

    from credex.node.services import get_profile

    trust, tls_files = _trust_and_tls(config, bundle, federation_key, ca, cert, key)
    try:
        subject, entries = asyncio.run(get_profile(node, uscc, trust, purpose=purpose, tls=tls_files))
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"{exc.code().name}: {exc.details()}") from None
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "verified": c.verified,
                        "problem": c.problem,
                        **MessageToDict(c.entry, preserving_proto_field_name=True),
                    }
                    for c in entries
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    table = Table(title=f"{subject}: {len(entries)} records", title_justify="left")
    for column in ("origin", "record", "decided", "authority", "publicity end", "signature"):
        table.add_column(column)
    for c in entries:
        r = c.entry.record
        table.add_row(
            c.entry.origin,
            r.record_id,
            r.decision_date,
            r.deciding_authority.name,
            r.publicity.end,
            "[green]✓ verified[/]" if c.verified else f"[red]✗ {c.problem}[/]",
        )
    console.print(table)
    if not all(c.verified for c in entries):
        raise typer.Exit(2)


# -- the tamper-evident log -----------------------------------------------------------


@app.command()
def audit(
    node: Annotated[str, typer.Option(help="host:port of the node whose copy to audit")],
    origin: Annotated[str, typer.Option(help="whose log (GB/T 2260 code)")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    state: Annotated[
        Path | None, typer.Option(help="remember what was audited; later audits check consistency")
    ] = None,
) -> None:
    """Verify a node's copy of an origin's log end to end. Exit 0: OK; 1: divergence; 2: could not audit."""
    from credex.node.chain import AuditError, AuditReport, audit_origin
    from credex.node.channels import PeerChannels

    trust, tls_files = _trust_and_tls(config, bundle, federation_key, ca, cert, key)
    ca_file, cert_file, key_file = tls_files or (None, None, None)

    remembered = json.loads(state.read_text()) if state is not None and state.exists() else {}

    async def run() -> AuditReport:
        channels = PeerChannels(ca_file, cert_file, key_file)
        try:
            return await audit_origin(channels, node, origin, trust, remembered.get(origin, {}) if state else None)
        finally:
            await channels.close()

    try:
        report = asyncio.run(run())
    except AuditError as exc:
        raise _fail(str(exc), code=2) from None
    for check in report.checks:
        console.print(f"  ✓ {check}")
    if report.ok:
        console.print(f"OK {origin} size {report.size} root {report.root.hex()}", soft_wrap=True)
        if state is not None:
            remembered[origin] = {"size": report.size, "root": report.root.hex()}
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps(remembered, indent=2))
        return
    console.print(f"[red]DIVERGENCE[/] in {node}'s copy of {origin}: {report.divergence}", soft_wrap=True)
    console.print(json.dumps(report.evidence, ensure_ascii=False, indent=2), soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def proof(
    record_id: Annotated[str, typer.Argument(help="the record whose current state to prove")],
    node: Annotated[str, typer.Option(help="host:port of any node holding the record")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    out: Annotated[Path | None, typer.Option(help="write the proof here (default: print it)")] = None,
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log (government callers must say)")] = "",
) -> None:
    """Fetch a self-contained, offline-verifiable proof of one record (envelope, audit path, checkpoint)."""
    import grpc

    from credex.node.chain import ProofInvalid, check_inclusion, proof_to_json
    from credex.node.channels import open_channel
    from credex.v1 import log_pb2, log_pb2_grpc

    trust, tls_files = _trust_and_tls(config, bundle, federation_key, ca, cert, key)
    origin = record_id.split("-", 1)[0]
    ca_file, cert_file, key_file = tls_files or (None, None, None)

    async def fetch() -> log_pb2.InclusionProof:
        async with open_channel(node, ca=ca_file, cert=cert_file, key=key_file) as channel:
            return await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(
                log_pb2.GetInclusionProofRequest(origin=origin, record_id=record_id, purpose=purpose),
                timeout=30,
            )

    try:
        fetched = asyncio.run(fetch())
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"{exc.code().name}: {exc.details()}") from None
    try:
        check_inclusion(fetched, trust)  # never hand out a proof that does not hold
    except ProofInvalid as exc:
        raise _fail(f"the node served a proof that does not verify: {exc}") from None
    text = proof_to_json(fetched)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")
        console.print(f"wrote {out}: event {fetched.seq} of {origin} in its log of {fetched.tree_size}")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="a proof file written by `credex proof`")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
) -> None:
    """Check a proof file offline with the trust bundle only. Exit 0 when it holds, 1 when not."""
    from credex.node.chain import ProofInvalid, check_inclusion, proof_from_json

    trust, _ = _trust_and_tls(config, bundle, federation_key)
    try:
        checked = check_inclusion(proof_from_json(file.read_text()), trust)
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}") from None
    except ProofInvalid as exc:
        console.print(f"[red]INVALID[/] {file}: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    record = checked.event.event.record
    console.print(
        f"OK {record.record_id}: event {checked.event.event.seq} signed by {record.origin},"
        f" included in its log of {checked.checkpoint.size} (root {checked.checkpoint.root.hex()[:16]}…)",
        soft_wrap=True,
    )
    console.print(f"   {record.subject.name} {record.subject.uscc} {record.document_number} {record.decision_date}")


@alarm_app.command("list")
def alarm_list(config: Annotated[Path, typer.Option("--config", "-c", help="the node's node.toml")]) -> None:
    """Open alarms of a node, with their evidence."""
    from credex.node.chain import list_alarms

    alarms = asyncio.run(_with_store(config, lambda pool: _on_connection(pool, list_alarms)))
    if not alarms:
        console.print("no open alarms")
    for alarm in alarms:
        console.print(
            f"#{alarm.id} {alarm.kind} on {alarm.origin} at {alarm.raised_at}: {alarm.message}", soft_wrap=True
        )
        console.print(json.dumps(alarm.evidence, ensure_ascii=False, indent=2), soft_wrap=True)


@alarm_app.command("clear")
def alarm_clear(
    alarm_id: Annotated[int, typer.Argument()],
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's node.toml")],
    by: Annotated[str, typer.Option(help="who clears it (kept with the alarm)")],
    note: Annotated[str, typer.Option(help="why it is safe to go on")] = "",
) -> None:
    """Clear an alarm after investigation; the node applies the origin's log again."""
    from credex.node.chain import clear_alarm

    cleared = asyncio.run(
        _with_store(config, lambda pool: _on_connection(pool, lambda conn: clear_alarm(conn, alarm_id, by, note)))
    )
    if not cleared:
        raise _fail(f"no open alarm #{alarm_id}")
    console.print(f"alarm #{alarm_id} cleared by {by}")


async def _with_store(config: Path, work: Any) -> Any:
    """Run ``work(pool)`` against the node's database (embedded or not)."""
    from credex.node.runtime import Node

    node = Node(_config(config))
    await node.start(serve=False, exchange=False)
    try:
        assert node.pool is not None
        return await work(node.pool)
    finally:
        await node.stop()


async def _on_connection(pool: asyncpg.Pool, work: Any) -> Any:
    async with pool.acquire() as conn:
        return await work(conn)


@profile_app.command("check")
def profile_check(
    file: Annotated[Path, typer.Argument(help="a platform export: .csv, .xlsx, .jsonl, or .json (API or table dump)")],
    profile: Annotated[str, typer.Option(help="profile name or .toml file")] = "national",
    origin: Annotated[str, typer.Option(help="origin the records would be published under")] = "310000",
    show: Annotated[int, typer.Option(help="how many mapped records and rejections to show")] = 5,
) -> None:
    """Dry run: map a file through a profile and show the records and the rejections, touching no ledger."""
    import datetime as dt
    from collections import Counter

    from google.protobuf.json_format import MessageToDict

    from credex.adapters.profile import MappingContext, Rejection
    from credex.adapters.tables import FileUnreadable
    from credex.crypto.pseudonym import Pseudonymizer
    from credex.node.feeds import Reader

    try:
        chosen = Profile.load(profile)
    except ProfileError as exc:
        raise _fail(str(exc)) from None
    # A throwaway pseudonym key: a dry run must not need (or reveal) the federation's.
    context = MappingContext(
        origin=origin, publicity=PublicityRules(), pseudonymizer=Pseudonymizer(os.urandom(32)), today=dt.date.today()
    )
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    examples: list[dict[str, object]] = []
    rejected: list[Rejection] = []
    rows = 0
    try:
        reader = Reader(file, chosen, context, batch_size=1000)
        while (batch := reader.next_batch()) is not None:
            rows += batch.rows
            for change in batch.changes:
                record = record_pb2.Record.FromString(change.state.encoded)
                kinds[record_pb2.Kind.Name(record.kind)] += 1
                if len(examples) < show:
                    examples.append(MessageToDict(record, preserving_proto_field_name=True))
            for _, rejection in batch.rejections:
                reasons.update(rejection.reasons)
                if len(rejected) < show:
                    rejected.append(rejection)
    except (FileUnreadable, ProfileError) as exc:
        raise _fail(str(exc)) from None
    accepted = sum(kinds.values())
    console.print(
        f"{file}: {rows} rows = {accepted} would be accepted + {rows - accepted} quarantined"
        f" (profile {chosen.name}, nothing written)",
        soft_wrap=True,
    )
    for kind, n in kinds.most_common():
        console.print(f"  {n:>7} × {kind}")
    for reason, n in reasons.most_common():
        console.print(f"  [red]{n:>7} × {reason}[/]")
    for example in examples:
        console.print_json(json.dumps(example, ensure_ascii=False))
    for rejection in rejected:
        console.print(
            f"[red]{rejection.locator}[/]: " + "; ".join(p.message for p in rejection.problems), soft_wrap=True
        )


@quality_app.command("report")
def quality_report(
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's node.toml")],
    unit: Annotated[str | None, typer.Option(help="one source unit's USCC")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for one CSV of problem rows per source unit")] = None,
    expected: Annotated[Path | None, typer.Option(help="CSV of unit_uscc,expected for the 上报率")] = None,
) -> None:
    """Quality per source unit: 全面性, 及时性, 准确性, 有效性, 上报率/合规率/及时率, 错码 and 重码 rates."""
    from credex.node.quality import RATES, compute, problem_rows, write_problem_csv

    settings = _config(config)
    wanted: dict[str, int] = {}
    if expected is not None:
        try:
            with expected.open(encoding="utf-8-sig", newline="") as handle:
                wanted = {row["unit_uscc"]: int(row["expected"]) for row in csv.DictReader(handle)}
        except (OSError, KeyError, ValueError) as exc:
            raise _fail(f"{expected}: expected a CSV with columns unit_uscc,expected ({exc})") from None
    deadline = settings.quality.deadline_working_days

    async def work(pool: asyncpg.Pool) -> Any:
        units = await compute(pool, settings.origin, deadline_days=deadline, unit=unit, expected=wanted)
        problems = {u.unit_uscc: await problem_rows(pool, u.unit_uscc) for u in units} if out else {}
        return units, problems

    units, problems = asyncio.run(_with_store(config, work))
    table = Table(
        title=f"data quality of {settings.origin}'s source units (及时: {deadline} working days)", title_justify="left"
    )
    for column in (
        "source unit",
        "reported",
        "accepted",
        "quarantined",
        "合规率",
        "及时率",
        "上报率",
        "全面性",
        "准确性",
        "有效性",
        "错码率",
        "重码率",
    ):
        table.add_column(column, justify="left" if column == "source unit" else "right")
    for u in units:
        table.add_row(
            f"{u.unit_name} {u.unit_uscc}",
            str(u.reported),
            str(u.accepted),
            str(u.quarantined),
            *(_percent(getattr(u, name)) for name in RATES),
        )
    console.print(table)
    if not all(u.calendar_official for u in units):
        console.print("some working days fall in years the official calendar does not cover yet: Monday to Friday used")
    if out is not None:
        for code, rows in problems.items():
            if rows:
                path = out / f"{code or 'unknown-unit'}.csv"
                write_problem_csv(path, rows)
                console.print(f"wrote {path}: {len(rows)} problem rows")


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


# -- keys and trust ---------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    directory: Annotated[Path, typer.Option("--dir", help="where to write signing.key and signing.pub")],
) -> None:
    """Create an Ed25519 signing key (refuses to overwrite one)."""
    try:
        key = SigningKey.generate()
        path = key.save(directory)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {path} (mode 0600) and {directory / 'signing.pub'}")
    console.print(f"key id {key.key_id}")


@keys_app.command("pseudonym")
def keys_pseudonym(out: Annotated[Path, typer.Option(help="file for the federation-wide pseudonym key")]) -> None:
    """Create the key that turns ID numbers into pseudonyms (share it with every member, secretly)."""
    try:
        Pseudonymizer.create(out)
    except FileExistsError:
        raise _fail(f"{out} already exists; every member must use the same key, so it is never replaced") from None
    console.print(f"wrote {out} (mode 0600)")


@tls_app.command("ca")
def tls_ca(
    directory: Annotated[Path, typer.Option("--dir", help="where to write ca.crt and ca.key")],
    name: Annotated[str, typer.Option(help="the CA's common name")] = "credex federation CA",
) -> None:
    """Create the federation CA that issues node and client certificates."""
    if (directory / "ca.key").exists():
        raise _fail(f"{directory / 'ca.key'} already exists")
    cert, key = CertificateAuthority.create(name).write(directory)
    console.print(f"wrote {cert} and {key} (mode 0600)")


@tls_app.command("issue")
def tls_issue(
    ca_dir: Annotated[Path, typer.Option(help="folder of ca.crt and ca.key")],
    name: Annotated[str, typer.Option(help="common name: a member's origin code, or a caller's identity")],
    out_dir: Annotated[Path, typer.Option(help="where to write node.crt, node.key and ca.crt")],
    host: Annotated[list[str] | None, typer.Option(help="DNS name or IP the certificate serves (repeatable)")] = None,
) -> None:
    """Issue a certificate (server and client use) under the federation CA."""
    try:
        ca = CertificateAuthority.load(ca_dir)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot load the CA from {ca_dir}: {exc}") from None
    cert, _ = ca.issue(name, host or []).write(out_dir, "node")
    (out_dir / "ca.crt").write_bytes(ca.cert_pem)
    console.print(f"wrote {cert} for {name} ({', '.join(host or []) or 'no hosts'})")


@app.command()
def health(
    node: Annotated[str | None, typer.Option(help="host:port (default: the config's listen address)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="node.toml, for TLS and address")] = None,
) -> None:
    """Ask a node's standard gRPC health service; exit 0 only when it is SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from credex.node.channels import open_channel

    ca = cert = key = None
    if config is not None:
        settings = _config(config)
        tls = settings.grpc.tls
        ca, cert, key = tls.client_ca, tls.cert, tls.key
        node = node or settings.grpc.listen.replace("0.0.0.0", "127.0.0.1")
    if node is None:
        raise _fail("give --node or --config")

    async def check() -> int:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return int(response.status)

    try:
        status = asyncio.run(check())
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"{node}: {exc.code().name}: {exc.details()}") from None
    serving = status == 1  # HealthCheckResponse.SERVING
    console.print(f"{node}: {'SERVING' if serving else 'NOT SERVING'}")
    if not serving:
        raise typer.Exit(1)


@trust_app.command("new")
def trust_new(
    draft: Annotated[Path, typer.Argument(help="draft bundle to create (JSON)")],
    federation: Annotated[str, typer.Option(help="federation name")],
    tls_ca: Annotated[Path | None, typer.Option(help="PEM of the federation CA")] = None,
) -> None:
    """Start an unsigned bundle draft."""
    if draft.exists():
        raise _fail(f"{draft} exists")
    bundle = TrustBundle(federation=federation, tls_ca=tls_ca.read_text() if tls_ca else "")
    draft.write_bytes(bundle.to_json())
    console.print(f"wrote draft {draft}")


@trust_app.command("add-member")
def trust_add_member(
    draft: Annotated[Path, typer.Argument()],
    origin: Annotated[str, typer.Option(help="GB/T 2260 code")],
    name: Annotated[str, typer.Option()],
    endpoint: Annotated[str, typer.Option(help="host:port of its gRPC server")],
    public_key: Annotated[list[Path], typer.Option("--public-key", help="signing.pub (repeatable)")],
    tls_cert: Annotated[
        Path | None, typer.Option(help="the member's node certificate (node.crt): only its key gets peer rights")
    ] = None,
) -> None:
    """Add a member, or update one, in a draft; bump the version.

    A member's keys already in the draft are kept, with their revocations: a key
    is never dropped (its old events must stay verifiable), only revoked with
    `credex trust revoke-key`.
    """
    try:
        bundle = TrustBundle.from_draft(draft)
        existing = bundle.member(origin)
        keys = list(existing.keys) if existing else []
        for path in public_key:
            raw = public_raw(load_public(path))
            if key_id(raw) not in {k.key_id for k in keys}:
                keys.append(MemberKey(key_id=key_id(raw), public_key=base64.b64encode(raw).decode()))
        spki = spki_sha256(tls_cert.read_bytes()) if tls_cert else (existing.tls_spki_sha256 if existing else "")
        member = Member(origin=origin, name=name, endpoint=endpoint, keys=tuple(keys), tls_spki_sha256=spki)
    except OSError as exc:
        raise _fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (TrustBundleError, KeyFileError, CertificateError, ValueError) as exc:
        raise _fail(str(exc)) from None
    bundle = bundle.with_member(member).next_version()
    draft.write_bytes(bundle.to_json())
    console.print(f"{origin} {name} in {draft} (version {bundle.version})")
    if not spki:
        err.print(
            f"[yellow]warning:[/] no --tls-cert: calls from {origin} get no peer rights until its node certificate"
            " is bound"
        )


@trust_app.command("revoke-key")
def trust_revoke_key(
    draft: Annotated[Path, typer.Argument()],
    origin: Annotated[str, typer.Option(help="the member whose key it is")],
    key_id_: Annotated[str, typer.Option("--key-id", help="the key id (`credex trust verify` lists them)")],
    after_seq: Annotated[
        int,
        typer.Option(
            help="the key vouches for nothing of the origin's log beyond this seq: give the size of the last"
            " checkpoint of that origin the federation has verified (`credex audit` prints it)",
            min=0,
        ),
    ],
    reason: Annotated[str, typer.Option(help="why (kept in the bundle)")],
    root: Annotated[
        str,
        typer.Option(
            help="hex Merkle root of the origin's log at --after-seq: the root `credex audit` prints for that"
            " size, or of the last checkpoint the federation verified. Every node compares its copy with it and"
            " raises an alarm naming the key if it holds other (forged) events up to there",
        ),
    ] = "",
) -> None:
    """Revoke a member's key by log position, in a draft; bump the version.

    Events of the origin after seq N and checkpoints larger than N signed with the key
    are rejected everywhere, whatever time their signer wrote into them. With --root,
    a node that took in history forged with the key up to N notices it.
    """
    try:
        bundle = TrustBundle.from_draft(draft)
        bundle = bundle.with_key_revoked(origin, key_id_, after_seq, reason, root.strip().lower()).next_version()
    except (TrustBundleError, ValueError) as exc:
        raise _fail(str(exc)) from None
    draft.write_bytes(bundle.to_json())
    console.print(f"key {key_id_} of {origin} revoked after seq {after_seq} in {draft} (version {bundle.version})")
    if not root:
        err.print(
            "[yellow]warning:[/] no --root: a node that takes in events forged with this key up to seq"
            f" {after_seq} (one new or catching up) will not notice; give the log's root at {after_seq}"
        )
    member = bundle.member(origin)
    if member is not None and all(k.revoked for k in member.keys):
        err.print(f"[yellow]warning:[/] {origin} has no unrevoked key left; add its new one with add-member")


@trust_app.command("sign")
def trust_sign(
    draft: Annotated[Path, typer.Argument()],
    key: Annotated[Path, typer.Option(help="the federation's signing key")],
    out: Annotated[Path, typer.Option(help="signed bundle to write")],
) -> None:
    """Sign a draft with the federation key."""
    try:
        bundle = TrustBundle.from_draft(draft)
        signer = SigningKey.load(key)
    except (TrustBundleError, KeyFileError) as exc:
        raise _fail(str(exc)) from None
    out.write_bytes(bundle.sign(signer))
    console.print(f"signed {out}: version {bundle.version}, {len(bundle.members)} members, key {signer.key_id}")


@trust_app.command("verify")
def trust_verify(
    signed: Annotated[Path, typer.Argument()],
    federation_key: Annotated[Path, typer.Option(help="the federation's public key")],
) -> None:
    """Check a signed bundle and list its members."""
    try:
        bundle = TrustBundle.load_signed(signed, load_public(federation_key))
    except (TrustBundleError, KeyFileError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"OK: {bundle.federation} version {bundle.version}, issued {bundle.issued_at:%Y-%m-%d %H:%M}")
    for member in bundle.members:
        keys = ", ".join(k.key_id + (f" ({k.revocation()})" if k.revoked else "") for k in member.keys)
        tls = f"tls {member.tls_spki_sha256[:16]}…" if member.tls_spki_sha256 else "[yellow]no tls binding[/]"
        console.print(f"  {member.origin} {member.name} {member.endpoint} {tls} keys: {keys}", soft_wrap=True)


# -- synth ------------------------------------------------------------------------------


@app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Argument(help=".csv or .xlsx file to write")],
    region: Annotated[str, typer.Option(help="origin code, e.g. 310000")] = "310000",
    kind: Annotated[str, typer.Option(help="penalty or licence")] = "penalty",
    rows: Annotated[int, typer.Option()] = 1000,
    seed: Annotated[int, typer.Option()] = 1,
    bad_share: Annotated[float, typer.Option(help="share of rows with one deliberate defect")] = 0.02,
    shared_share: Annotated[float, typer.Option(help="share of rows about subjects shared across regions")] = 0.15,
    headers: Annotated[str, typer.Option(help="codes (CF_XDR_MC) or names (行政相对人名称)")] = "codes",
    encoding: Annotated[str, typer.Option(help="utf-8, utf-8-sig or gb18030 (CSV only)")] = "utf-8",
    first_row: Annotated[int, typer.Option(help="number the documents from here")] = 0,
) -> None:
    """Generate deterministic sample data in the national 双公示 format."""
    if kind not in ("penalty", "licence") or headers not in ("codes", "names"):
        raise _fail("--kind is penalty or licence; --headers is codes or names")
    chosen_kind: synth.Kind = "penalty" if kind == "penalty" else "licence"
    chosen_headers: synth.HeaderStyle = "codes" if headers == "codes" else "names"
    if encoding not in ("utf-8", "utf-8-sig", "gb18030"):
        raise _fail("--encoding is utf-8, utf-8-sig or gb18030")
    spec = synth.SynthSpec(
        region=region,
        kind=chosen_kind,
        rows=rows,
        seed=seed,
        bad_share=bad_share,
        shared_share=shared_share,
        first_row=first_row,
    )
    summary = synth.write(out, spec, headers=chosen_headers, encoding=encoding)
    console.print(f"wrote {out}: {summary.rows} rows, {summary.bad} with a deliberate defect")
    for defect, n in summary.defects.most_common():
        console.print(f"    {n:>6} × {defect}")


def main() -> None:
    with contextlib.suppress(BrokenPipeError):
        app()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
