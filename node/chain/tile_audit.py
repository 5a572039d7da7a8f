"""``credex audit --over http``: the same end-to-end audit as over gRPC, read from a node's tile server.

The auditor reads what any tlog-tiles client reads (the checkpoint, the entry
bundles, the hash tiles, see :mod:`credex.node.services.tile_server`) and trusts
only the bundle: the origin's signature on the checkpoint, each envelope's
signature and place, the Merkle root of the envelopes against the checkpoint's,
and every hash tile served against the tree the envelopes give, so a node whose
tiles and entries disagree is caught as surely as one whose root is wrong. With
the whole tree rebuilt, the previous audit's root is compared directly (no
consistency proof to fetch).
"""

from __future__ import annotations

import base64

import httpx
from google.protobuf.message import DecodeError

from credex.crypto.checkpoint import CheckpointRejected
from credex.crypto.merkle import MerkleTree, leaf_hash
from credex.crypto.tiles import TILE_HEIGHT, TILE_WIDTH, entries_path, tile_path, tile_width
from credex.crypto.trust import EventRejected, EventVerifier, TrustBundle
from credex.node.chain.log_audit import AuditError, AuditReport
from credex.v1 import event_pb2


async def audit_origin_over_tiles(
    client: httpx.AsyncClient, origin: str, bundle: TrustBundle, last_audit: dict[str, object] | None = None
) -> AuditReport:
    """Audit ``origin``'s log as the tile server behind ``client`` (its base URL) serves it."""
    report = AuditReport(origin)
    if bundle.member(origin) is None:
        raise AuditError(f"{origin} is not a member of the federation")
    note = (await _get(client, f"/{origin}/checkpoint")).decode("utf-8", errors="replace")
    try:
        checkpoint = bundle.verify_checkpoint(origin, note)
    except CheckpointRejected as exc:
        return report.diverged(f"the checkpoint served is not {origin}'s: {exc.message}", {"note": note})
    size = report.size = checkpoint.size
    report.root = checkpoint.root
    report.checks.append(f"checkpoint signed by {origin}: size {size}")

    verifier = EventVerifier(bundle)
    tree = MerkleTree()
    for index in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = tile_width(size, 0, index)
        bundle_bytes = await _get(client, f"/{origin}/{entries_path(index, width)}")
        entries = _entries(bundle_bytes)
        if entries is None or len(entries) != width:
            return report.diverged(f"entry bundle {index} is not {width} length-prefixed entries", {"tile": index})
        for entry in entries:
            want = tree.size + 1
            evidence: dict[str, object] = {"seq": want, "entry": base64.b64encode(entry).decode()}
            try:
                envelope = event_pb2.Envelope.FromString(entry)
            except DecodeError:
                return report.diverged(f"entry {want} is not an envelope", evidence)
            try:
                verified = verifier.verify(envelope, origin)
            except EventRejected as exc:
                return report.diverged(f"event {want}: {exc.message}", evidence)
            if verified.event.seq != want:
                return report.diverged(f"expected event {want}, the bundle holds {verified.event.seq}", {"seq": want})
            tree.append(leaf_hash(verified.canonical))
    report.checks.append(f"{size} events, each signed by {origin}, in sequence")
    if tree.root() != checkpoint.root:
        return report.diverged(
            f"the events served give another root than {origin} signed at size {size}",
            {"size": size, "checkpoint_root": checkpoint.root.hex(), "root_of_served_events": tree.root().hex()},
        )
    report.checks.append("the events' Merkle root equals the checkpoint's")

    level = 0
    while held := size >> (TILE_HEIGHT * level):
        for index in range((held + TILE_WIDTH - 1) // TILE_WIDTH):
            width = tile_width(size, level, index)
            served = await _get(client, f"/{origin}/{tile_path(level, index, width)}")
            first = index * TILE_WIDTH
            expected = b"".join(tree.subtree(TILE_HEIGHT * level, first + i) for i in range(width))
            if served != expected:
                return report.diverged(
                    f"hash tile {tile_path(level, index, width)} disagrees with the events", {"level": level}
                )
        level += 1
    report.checks.append("every hash tile agrees with the events")

    if last_audit and "size" in last_audit:
        old_size, old_root = int(str(last_audit["size"])), bytes.fromhex(str(last_audit["root"]))
        if old_size > size:
            return report.diverged(
                f"the log shrank from {old_size} to {size} since the last audit", {"last": last_audit}
            )
        if tree.root(old_size) != old_root:
            return report.diverged(
                f"the log at {size} does not extend the log at {old_size} audited before", {"last": last_audit}
            )
        report.checks.append(f"the log extends the one audited before (size {old_size})")
    report.ok = True
    return report


async def _get(client: httpx.AsyncClient, path: str) -> bytes:
    try:
        answer = await client.get(path, timeout=60)
    except httpx.HTTPError as exc:
        raise AuditError(f"{client.base_url}{path}: {type(exc).__name__}: {exc}") from None
    if answer.status_code != 200:
        raise AuditError(f"{client.base_url}{path}: HTTP {answer.status_code}: {answer.text[:200]}")
    return answer.content


def _entries(bundle: bytes) -> list[bytes] | None:
    """The entries of a bundle (uint16 length, bytes), or None when the bundle does not parse."""
    entries, at = [], 0
    while at < len(bundle):
        if at + 2 > len(bundle):
            return None
        length = int.from_bytes(bundle[at : at + 2], "big")
        if at + 2 + length > len(bundle):
            return None
        entries.append(bundle[at + 2 : at + 2 + length])
        at += 2 + length
    return entries
