"""Generate ``docs/asyncapi.json``: the Kafka topic contract of a credex federation, from the proto and the relay.

Direct Kafka subscribers read the topics the relays publish. What they can rely on —
topics, keys, CloudEvents headers, payload types, ordering and replay — is written
here from the code that does it: message schemas from the compiled proto descriptors,
header names and values from the functions the relay calls (node/kafka.py), event types
from the EventType enum. Run ``python tools/asyncapi.py`` after changing any of them;
tests/test_topic_contract.py fails while the committed document is stale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from credex.node import kafka as bus
from credex.node.config import checkpoints_topic, events_topic
from credex.v1 import event_pb2

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "asyncapi.json"
PROTO_SCHEMA = "application/schema+json;version=draft-07"

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_INT64: {"type": "integer"},
    FieldDescriptor.TYPE_UINT64: {"type": "integer", "minimum": 0},
}

ORDERING = (
    "One topic per origin. Messages are keyed by the subject's id (USCC), so one subject's events keep their order"
    " within a partition; across partitions they interleave. Every event carries its origin's dense sequence"
    " number (ce_sequence, and seq inside the signed payload): a consumer that needs the log's order sorts by it"
    " per origin. The signed payload is the only truth; headers are routing hints."
)
REPLAY = (
    "Delivery is at least once. The same event may arrive again (a relay retried, or republished everything after"
    " the broker lost its log); identify events by (origin, seq) or ce_id and apply each once, keeping for each"
    " record the state of its highest seq. Read from the earliest offset to replay what the broker retains;"
    " what retention removed, and every withheld event, is served with its signature and Merkle proof by the"
    " origin's or any member's gRPC API (SubscriptionService.Subscribe with a cursor, ExchangeService.FetchEvents"
    " for peers). Verify each envelope against the federation's trust bundle before use."
)
WITHHELD = (
    "Only events of public records about legal entities cross the bus with their content. Any other event is"
    " announced by a withheld notice: no key, no value, no subject; its ce_sequence says that the seq exists, so"
    " a consumer counting seqs sees no gap. A notice is an unsigned hint, never evidence."
)


def enum_schema(enum: EnumDescriptor) -> dict[str, Any]:
    return {
        "type": "string",
        "enum": [value.name for value in enum.values],
        "description": f"{enum.full_name}: JSON names; the wire carries the numbers "
        + ", ".join(f"{value.name}={value.number}" for value in enum.values),
    }


def message_schemas(root: Descriptor) -> dict[str, dict[str, Any]]:
    """JSON Schemas of ``root`` and every message it holds, by full name, with each field's proto number."""
    schemas: dict[str, dict[str, Any]] = {}
    pending = [root]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in schemas:
            continue
        properties: dict[str, Any] = {}
        for fd in descriptor.fields:
            if fd.message_type is not None:
                schema: dict[str, Any] = {"$ref": f"#/components/schemas/{fd.message_type.full_name}"}
                pending.append(fd.message_type)
            elif fd.enum_type is not None:
                schema = enum_schema(fd.enum_type)
            else:
                schema = dict(_SCALARS[fd.type])
            if fd.is_repeated:
                schema = {"type": "array", "items": schema}
            schema["x-proto-field"] = fd.number
            properties[fd.name] = schema
        schemas[descriptor.full_name] = {
            "type": "object",
            "x-proto-message": descriptor.full_name,
            "properties": properties,
        }
    return dict(sorted(schemas.items()))


def header_schema(headers: list[tuple[str, bytes]], values: dict[str, Any]) -> dict[str, Any]:
    """The headers the relay sets, as it sets them, each described; ``values`` pins the ones that are fixed."""
    properties: dict[str, Any] = {}
    for name, _ in headers:
        properties[name] = {"type": "string", **values.get(name, {})}
    return {"type": "object", "required": sorted(properties), "properties": properties}


def document() -> dict[str, Any]:
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    event_types = [
        f"cn.credex.record.{v.name.removeprefix('EVENT_TYPE_').lower()}.v1"
        for v in event_pb2.EventType.DESCRIPTOR.values
        if v.number
    ]
    source = {"pattern": "^urn:credex:origin:[0-9]{6}$", "description": "urn:credex:origin:<origin code>"}
    sequence = {"pattern": "^[1-9][0-9]*$", "description": "the event's seq in its origin's log (decimal)"}
    event_headers = header_schema(
        bus.cloudevent_headers("310000", 1, "id", event_pb2.EVENT_TYPE_UPSERT, "subject", moment),
        {
            "ce_specversion": {"const": "1.0"},
            "ce_id": {"format": "uuid", "description": "the event id, unique across the federation"},
            "ce_source": source,
            "ce_type": {"enum": event_types},
            "ce_subject": {"description": "the subject's id: the USCC of a legal entity"},
            "ce_time": {"format": "date-time", "description": "when the origin's ledger signed the event"},
            "ce_sequence": sequence,
            "content-type": {"const": bus.ENVELOPE_CONTENT_TYPE},
        },
    )
    notice_headers = header_schema(
        bus.withheld_notice_headers("310000", 1, "id"),
        {
            "ce_specversion": {"const": "1.0"},
            "ce_id": {"format": "uuid"},
            "ce_source": source,
            "ce_type": {"const": bus.WITHHELD_TYPE},
            "ce_sequence": sequence,
        },
    )
    checkpoint_headers = header_schema(
        bus.checkpoint_headers("310000", 1, moment),
        {
            "ce_specversion": {"const": "1.0"},
            "ce_id": {"description": "<origin>-checkpoint-<size>"},
            "ce_source": source,
            "ce_type": {"const": "cn.credex.checkpoint.v1"},
            "ce_subject": {"description": "the origin code"},
            "ce_time": {"format": "date-time"},
            "ce_sequence": {"description": "the checkpoint's tree size"},
            "content-type": {"const": bus.CHECKPOINT_CONTENT_TYPE},
        },
    )
    origin_parameter = {"origin": {"description": "the publishing member's GB/T 2260 code, e.g. 310000"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "credex federation bus",
            "version": "v1",
            "description": "The Kafka topics every credex node publishes: its signed events and checkpoints. "
            + ORDERING
            + " "
            + REPLAY
            + " "
            + WITHHELD,
        },
        "channels": {
            "events": {
                "address": events_topic("{origin}"),
                "parameters": origin_parameter,
                "description": "An origin's log of signed events, keyed by subject. " + ORDERING,
                "messages": {
                    "recordEvent": {"$ref": "#/components/messages/recordEvent"},
                    "withheldNotice": {"$ref": "#/components/messages/withheldNotice"},
                },
            },
            "checkpoints": {
                "address": checkpoints_topic("{origin}"),
                "parameters": origin_parameter,
                "description": "An origin's signed checkpoints (C2SP signed notes): its log's size and Merkle root.",
                "messages": {"checkpoint": {"$ref": "#/components/messages/checkpoint"}},
            },
        },
        "operations": {
            "receiveEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/events"},
                "description": REPLAY,
                "messages": [
                    {"$ref": "#/channels/events/messages/recordEvent"},
                    {"$ref": "#/channels/events/messages/withheldNotice"},
                ],
            },
            "receiveCheckpoints": {
                "action": "receive",
                "channel": {"$ref": "#/channels/checkpoints"},
                "messages": [{"$ref": "#/channels/checkpoints/messages/checkpoint"}],
            },
        },
        "components": {
            "messages": {
                "recordEvent": {
                    "name": "recordEvent",
                    "title": "A signed event of a public record about a legal entity",
                    "contentType": bus.ENVELOPE_CONTENT_TYPE,
                    "headers": event_headers,
                    "payload": {
                        "schemaFormat": PROTO_SCHEMA,
                        "schema": {
                            "$ref": "#/components/schemas/credex.v1.Envelope",
                            "description": "The value is the protobuf encoding of credex.v1.Envelope; its payload"
                            " is a credex.v1.Event (payload_type says so), signed over DSSE's PAE of the exact bytes.",
                        },
                    },
                    "bindings": {
                        "kafka": {"key": {"type": "string", "description": "the subject's id (USCC)"}},
                    },
                },
                "withheldNotice": {
                    "name": "withheldNotice",
                    "title": "An event that does not cross the bus: fetch it over gRPC",
                    "description": WITHHELD,
                    "headers": notice_headers,
                    "payload": {"type": "null"},
                    "bindings": {"kafka": {"key": {"type": "null"}}},
                },
                "checkpoint": {
                    "name": "checkpoint",
                    "title": "A signed checkpoint of the origin's log",
                    "contentType": bus.CHECKPOINT_CONTENT_TYPE,
                    "headers": checkpoint_headers,
                    "payload": {"type": "string", "description": "a C2SP tlog-checkpoint signed note"},
                    "bindings": {"kafka": {"key": {"type": "string", "description": "the origin code"}}},
                },
            },
            "schemas": {
                **message_schemas(event_pb2.Envelope.DESCRIPTOR),
                **message_schemas(event_pb2.Event.DESCRIPTOR),
            },
        },
    }


def render() -> str:
    return json.dumps(document(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed document is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT} is stale: run python tools/asyncapi.py", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
