"""Property-based fuzzing of every RPC: whatever arrives, only deliberate status codes come back.

Random bytes as raw requests, and well-formed requests with random field values,
from each kind of caller, to every method of every credex service (the list comes
from the server, so a method added later is fuzzed too). No answer may be UNKNOWN
or INTERNAL (an exception that escaped), and the node's memory stays bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from credex.node.services.server import SERVICES
from credex.v1 import log_pb2

from .callers import PUBLIC, client_channel, government_channel, peer_channel, serve_sample
from .conftest import TestFederation

DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
METHODS = [(f"/{s.full_name}/{m.name}", m.input_type) for s in SERVICES.values() for m in s.methods]
# Server streams answer with their first message (or their refusal); a stream that opened is OK.
STREAMS = {f"/{s.full_name}/{m.name}" for s in SERVICES.values() for m in s.methods if m.server_streaming}
EXAMPLES = 120  # per property; enough to reach every method with many shapes, small enough for a fast suite
MEMORY_BOUND = 128 * 1024 * 1024  # generous: what the calls may add to the process, caches included
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# Values that matter to the node, mixed with arbitrary ones.
TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "310000", "320000", "990000", "91310000600037341L", " 91310000600037341L\u3000"]),
    st.sampled_from(["\x00", "a\x00b", "\u202e", "\ufdfa" * 70, "x" * 5000, "\ud7ff" * 64]),
)
UINT64 = st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1), st.sampled_from([2**63 - 1, 2**63]))
UINT32 = st.integers(0, 2**32 - 1)


def message_values(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Serialized messages of ``descriptor`` with random values in each top-level field."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_STRING and fd.is_repeated:
            fields[fd.name] = st.lists(TEXTS, max_size=5)
        elif fd.type == FieldDescriptor.TYPE_STRING:
            fields[fd.name] = TEXTS
        elif fd.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            fields[fd.name] = UINT64
        elif fd.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            fields[fd.name] = UINT32
    message_class = message_factory.GetMessageClass(descriptor)

    def build(values: dict[str, Any]) -> bytes:
        message = message_class()
        for name, value in values.items():
            if isinstance(value, list):
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)  # a oneof keeps the last one set: both shapes get tried
        return message.SerializeToString()

    return st.fixed_dictionaries({}, optional=fields).map(build)


RAW_CALLS = st.tuples(st.sampled_from([path for path, _ in METHODS]), st.binary(max_size=300))
FIELD_CALLS = st.sampled_from(METHODS).flatmap(lambda m: st.tuples(st.just(m[0]), message_values(m[1])))


def resident_bytes() -> int:
    """Resident memory of this process (the node runs in it), from /proc/self/statm."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def test_every_rpc_answers_random_bytes_and_random_fields_with_a_deliberate_status_in_bounded_memory(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, _ = await serve_sample(federation, tmp_path, rows=20)
    loop = asyncio.get_running_loop()
    channels = [
        government_channel(federation, node),
        client_channel(federation, node, PUBLIC),
        peer_channel(federation, node, "320000"),
    ]

    async def send(path: str, payload: bytes, caller: int) -> grpc.StatusCode:
        try:
            if path in STREAMS:
                stream = channels[caller].unary_stream(path, None, None)(payload, timeout=60)
                await stream.read()
                stream.cancel()
            else:
                await channels[caller].unary_unary(path, None, None)(payload, timeout=60)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def answered(path: str, payload: bytes, caller: int) -> grpc.StatusCode:
        return asyncio.run_coroutine_threadsafe(send(path, payload, caller), loop).result(timeout=120)

    seen: set[grpc.StatusCode] = set()

    def fuzzing(calls: st.SearchStrategy[tuple[str, bytes]]) -> Callable[[], None]:
        """A Hypothesis run of ``calls``, each as any of the callers: every answer has a deliberate status."""

        @FUZZ_SETTINGS
        @given(call=calls, caller=st.integers(0, 2))
        def run(call: tuple[str, bytes], caller: int) -> None:
            code = answered(*call, caller)
            seen.add(code)
            assert code in DELIBERATE, (call, code)

        return run

    random_bytes, random_fields = fuzzing(RAW_CALLS), fuzzing(FIELD_CALLS)

    await asyncio.to_thread(random_bytes)  # warm up: first calls fill pools, channels and code caches
    before = resident_bytes()
    await asyncio.to_thread(random_fields)
    await asyncio.to_thread(random_bytes)
    grown = resident_bytes() - before
    # Whatever it was sent, the node still answers a valid request: nothing above wedged it.
    valid = log_pb2.GetCheckpointRequest(origin=node.origin).SerializeToString()
    still = await send("/credex.v1.LogService/GetCheckpoint", valid, 2)
    for channel in channels:
        await channel.close(None)
    assert grpc.StatusCode.INVALID_ARGUMENT in seen
    assert still == grpc.StatusCode.OK
    assert grown < MEMORY_BOUND, f"resident memory grew by {grown / 2**20:.0f} MiB"
    assert REGISTRY.get_sample_value("credex_rpc_in_flight", {"origin": node.origin}) == 0
