"""The Kafka topic contract: docs/asyncapi.json is what tools/asyncapi.py generates now, and it holds in practice.

The document is generated from the proto descriptors and from the functions the relay
uses for its headers, so it is stale the moment either changes without regenerating:
this test says so. The example consumer written against the document reads what a
node publishes and verifies every envelope.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from credex.v1 import event_pb2

from .conftest import TestFederation
from .streaming import READ_TIMEOUT, append, company, penalty

ROOT = Path(__file__).resolve().parent.parent
SH = "310000"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("asyncapi_tool", ROOT / "tools" / "asyncapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_asyncapi_document_is_what_the_generator_writes_now() -> None:
    generator = _generator()
    committed = (ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8")
    assert committed == generator.render(), "docs/asyncapi.json is stale: run python tools/asyncapi.py"


def test_the_document_names_every_event_type_the_topics_and_the_signed_payload() -> None:
    document = json.loads((ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8"))
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["events"]["address"] == "credex.{origin}.events"
    assert document["channels"]["checkpoints"]["address"] == "credex.{origin}.checkpoints"
    ce_types = document["components"]["messages"]["recordEvent"]["headers"]["properties"]["ce_type"]["enum"]
    names = [v.name for v in event_pb2.EventType.DESCRIPTOR.values if v.number]
    assert ce_types == [f"cn.credex.record.{n.removeprefix('EVENT_TYPE_').lower()}.v1" for n in names]
    event = document["components"]["schemas"]["credex.v1.Event"]["properties"]
    assert {name: event[name]["x-proto-field"] for name in ("origin", "seq", "standing")} == {
        "origin": 1,
        "seq": 2,
        "standing": 12,
    }


async def test_the_example_consumer_reads_and_verifies_what_a_node_publishes(federation: TestFederation) -> None:
    node = await federation.start_node(SH)
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 6)])
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "kafka_consumer.py"),
        "--bootstrap",
        federation.broker.bootstrap_servers,
        "--origin",
        SH,
        "--bundle",
        str(federation.layout.bundle),
        "--federation-key",
        str(federation.layout.federation_public),
        "--max",
        "5",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(consumer.communicate(), READ_TIMEOUT)
    assert consumer.returncode == 0
    lines = out.decode().splitlines()
    assert sorted(int(line.split()[0].split(":")[1]) for line in lines) == [1, 2, 3, 4, 5]
    assert all(line.endswith("verified") and "cn.credex.record.upsert.v1" in line for line in lines)
