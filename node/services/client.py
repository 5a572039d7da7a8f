"""A lookup client that trusts the origins' signatures, not the node it asks.

Each profile entry comes with the envelope of the event behind it. The client
verifies that envelope against the trust bundle for the entry's origin and
checks that the record shown is byte for byte the record the origin signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from credex.crypto.trust import EventRejected, EventVerifier, TrustBundle
from credex.node.channels import open_channel
from credex.node.store import record_bytes
from credex.v1 import lookup_pb2, lookup_pb2_grpc


@dataclass(frozen=True)
class CheckedEntry:
    entry: lookup_pb2.ProfileEntry
    verified: bool
    key_id: str
    problem: str = ""


def check_entry(entry: lookup_pb2.ProfileEntry, verifier: EventVerifier) -> CheckedEntry:
    try:
        verified = verifier.verify(entry.envelope, entry.origin)
    except EventRejected as exc:
        return CheckedEntry(entry, False, entry.envelope.key_id, exc.message)
    if verified.event.seq != entry.seq:
        return CheckedEntry(entry, False, entry.envelope.key_id, "the envelope is of another event")
    if record_bytes(verified.event.record) != record_bytes(entry.record):
        return CheckedEntry(entry, False, entry.envelope.key_id, "the record shown differs from the signed one")
    return CheckedEntry(entry, True, entry.envelope.key_id)


async def get_profile(
    endpoint: str,
    uscc: str,
    bundle: TrustBundle,
    *,
    purpose: str = "",
    tls: tuple[Path | None, Path | None, Path | None] | None = None,
    timeout: float = 10.0,
) -> tuple[str, list[CheckedEntry]]:
    """The subject's profile as ``endpoint`` serves it, each entry checked against ``bundle``.

    ``tls`` is (CA, client certificate, client key), each as given even when
    incomplete, so that a refused handshake fails here (``AioRpcError``) and can
    be explained by what is missing rather than fall back to plain text.
    """
    ca, cert, key = tls if tls else (None, None, None)
    async with open_channel(endpoint, ca=ca, cert=cert, key=key) as channel:
        stub = lookup_pb2_grpc.LookupServiceStub(channel)
        profile = await stub.GetProfile(lookup_pb2.GetProfileRequest(uscc=uscc, purpose=purpose), timeout=timeout)
    verifier = EventVerifier(bundle)
    return profile.subject_id, [check_entry(e, verifier) for e in profile.entries]
