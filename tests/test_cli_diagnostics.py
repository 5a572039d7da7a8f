"""What the command line says when something is wrong, and the JSON it writes for other tools.

An operator who forgets a flag or holds the wrong certificate reads one line
saying what is wrong and which flag fixes it, never a traceback or a bare
"Socket closed"; envelopes leave in DSSE's JSON form so DSSE tools read them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from credex.adapters.profile import Profile, shipped_profiles
from credex.adapters.samples import synth
from credex.crypto.envelope import pae
from credex.crypto.tls import CertificateAuthority
from credex.node.cli import app
from credex.node.runtime import Node
from credex.v1 import record_pb2

from .conftest import TestFederation

CREDEX = [sys.executable, "-m", "credex.node.cli"]
runner = CliRunner()


async def credex(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CREDEX, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def a_subject_of(node: Node, tmp_path: Path) -> str:
    sample = tmp_path / "sample.csv"
    synth.write(sample, synth.SynthSpec(region=node.origin, rows=20, bad_share=0.0))
    await node.ingest([sample], Profile.load("national"))
    assert node.pool is not None
    encoded = await node.pool.fetchval("SELECT record FROM records WHERE origin = $1 LIMIT 1", node.origin)
    return record_pb2.Record.FromString(encoded).subject.uscc


def one_error_line(err: str) -> str:
    """The single ``error: …`` line a failed command prints, with no traceback around it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


async def test_a_refused_tls_handshake_is_explained_with_the_flag_that_fixes_it(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    layout = federation.layout
    ca, cert, key = layout.client_tls()
    foreign_ca = CertificateAuthority.create("not the federation CA")
    foreign_ca_cert, _ = foreign_ca.write(tmp_path / "foreign-ca")
    foreign_cert, foreign_key = foreign_ca.issue("intruder", ["127.0.0.1"]).write(tmp_path / "intruder", "client")
    trust = ["--bundle", str(layout.bundle), "--federation-key", str(layout.federation_public)]
    endpoint = f"127.0.0.1:{node.port}"
    subject = "91310000MA1FL8LQ2B"

    code, _, err = await credex("lookup", subject, "--node", endpoint, *trust)
    assert code == 1
    assert "--ca" in one_error_line(err) and "speaks TLS" in err

    code, _, err = await credex("lookup", subject, "--node", endpoint, *trust, "--ca", str(ca))
    assert code == 1
    assert "no client certificate" in one_error_line(err) and "--cert and --key" in err

    with_foreign = ["--ca", str(ca), "--cert", str(foreign_cert), "--key", str(foreign_key)]
    code, _, err = await credex("lookup", subject, "--node", endpoint, *trust, *with_foreign)
    assert code == 1
    assert "not issued by the federation CA" in one_error_line(err) and str(foreign_cert) in err

    code, _, err = await credex("proof", "310000-CF-0", "--node", endpoint, *trust, *with_foreign)
    assert code == 1 and "GetInclusionProof" in one_error_line(err) and "federation CA" in err

    # audit: "could not audit" (2), for the same reason in the same words
    code, _, err = await credex("audit", "--node", endpoint, "--origin", "310000", *trust, *with_foreign)
    assert code == 2 and "not issued by the federation CA" in one_error_line(err)

    wrong_ca = ["--ca", str(foreign_ca_cert), "--cert", str(cert), "--key", str(key)]
    code, _, err = await credex("lookup", subject, "--node", endpoint, *trust, *wrong_ca)
    assert code == 1
    assert "the node's certificate is not issued by the CA given" in one_error_line(err) and "--ca" in err


async def test_lookup_json_carries_each_envelope_in_dsse_form_that_verifies_by_the_dsse_rules(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    subject = await a_subject_of(node, tmp_path)
    config = str(federation.layout.config_path("310000"))
    code, out, err = await credex("lookup", subject, "--node", f"127.0.0.1:{node.port}", "--config", config, "--json")
    assert code == 0, err
    entries = json.loads(out)
    assert entries and all(entry["verified"] for entry in entries)
    bundle = federation.bundle_now()
    for entry in entries:
        envelope = entry["envelope"]
        assert set(envelope) == {"payloadType", "payload", "signatures"}
        [signature] = envelope["signatures"]
        assert set(signature) == {"keyid", "sig"}
        # What any DSSE verifier does: PAE over the decoded payload, checked with the signer's key.
        public: Ed25519PublicKey = bundle.keys_by_id[signature["keyid"]][2]
        public.verify(
            base64.b64decode(signature["sig"]),
            pae(envelope["payloadType"], base64.b64decode(envelope["payload"])),
        )


def test_profile_list_shows_every_shipped_profile_with_its_platform_transport_and_record_kinds() -> None:
    result = runner.invoke(app, ["profile", "list"])
    assert result.exit_code == 0, result.output
    for name in shipped_profiles():
        assert name in result.output
        for kind in Profile.load(name).spec.kinds:
            assert kind.kind.removeprefix("KIND_").lower() in result.output
    shanghai = next(line for line in result.output.splitlines() if " shanghai " in line)
    assert "上海市公共信用信息服务平台" in shanghai and "前置库" in shanghai
    zhejiang = next(line for line in result.output.splitlines() if " zhejiang " in line)
    assert "HTTP API" in zhejiang


def test_every_command_runs_inside_the_error_boundary() -> None:
    def commands(command: Any) -> list[Any]:
        if hasattr(command, "commands"):  # a group
            return [leaf for sub in command.commands.values() for leaf in commands(sub)]
        return [command]

    every = commands(typer.main.get_command(app))
    assert len(every) > 20
    unguarded = [c.name for c in every if c.callback is None or not hasattr(c.callback, "__wrapped__")]
    assert not unguarded


def test_an_error_raised_on_purpose_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    sample = tmp_path / "x.csv"
    sample.write_text("a,b\n1,2\n", encoding="utf-8")
    result = runner.invoke(app, ["profile", "check", str(sample), "--profile", "no-such-platform"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("error: no profile 'no-such-platform'")
    assert len(result.output.strip().splitlines()) == 1


async def test_an_audit_whose_consistency_proof_call_fails_says_what_failed_and_what_to_do() -> None:
    import socket

    from credex.crypto.checkpoint import Checkpoint
    from credex.node.chain import AuditError
    from credex.node.chain.log_audit import _check_against_last_audit
    from credex.node.channels import PeerChannels

    with socket.socket() as probe:  # a port nothing listens on: the call fails as a dead node's would
        probe.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{probe.getsockname()[1]}"
    channels = PeerChannels(None, None, None)
    try:
        checkpoint = Checkpoint("credex.log/310000", 10, bytes(32))
        with pytest.raises(AuditError) as failed:
            await _check_against_last_audit(channels, endpoint, "310000", checkpoint, {"size": 5, "root": "00" * 32})
    finally:
        await channels.close()
    message = str(failed.value)
    assert "GetConsistencyProof from size 5 to 10" in message and "unreachable" in message
    assert "run the audit again" in message
