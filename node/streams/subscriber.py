"""The subscriber's side of a stream: check every message with the trust bundle alone, keep the cursor.

A subscriber does not trust the node it streams from: each event's envelope is checked
against its origin's keys, each proof's audit path against the origin's signed
checkpoint, and each seq against the cursor (a seq at or below it is a duplicate, and
an unfiltered stream that skips one has a gap). The cursor is saved atomically (a
temporary file renamed over the old one), so a subscriber killed at any moment resumes
from a cursor it has fully taken.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from credex.crypto.merkle import verify_inclusion
from credex.crypto.trust import EventRejected, EventVerifier, TrustBundle
from credex.domain.identity import subject_id
from credex.errors import CredexError
from credex.node.chain import ProofInvalid, check_inclusion
from credex.v1 import event_pb2, log_pb2, subscription_pb2

CURSOR_FORMAT = "credex-cursor-v1"


class StreamInvalid(CredexError):
    """A message that does not check out: a forged or altered envelope, a bad proof, a seq sent twice."""


@dataclass(frozen=True, slots=True)
class Taken:
    """One message as the subscriber took it: what it was, and the line to show for it."""

    kind: str  # event, change, proof, heartbeat
    origin: str = ""
    seq: int = 0
    event: event_pb2.Event | None = None
    proved: bool = False
    # Beside a risk class (supervision streams): its scheme's default 双随机 rate, as the node sent it.
    sampling: subscription_pb2.SamplingRate | None = None

    def line(self) -> str:
        if self.kind == "event" and self.event is not None:
            e = self.event
            kind = e.record.kind
            proof = "proved" if self.proved else "proof to follow"
            rate = ""
            if self.sampling is not None:
                s = self.sampling
                rate = f" class={s.risk_class} ({s.scheme}) 双随机 {s.low_percent}–{s.high_percent}%"
            return (
                f"{self.origin}:{self.seq} {event_pb2.EventType.Name(e.type)} {e.record_id} kind={kind}"
                f" subject={subject_id(e.record)}{rate} signed; {proof}"
            )
        if self.kind == "change":
            return f"{self.origin}:{self.seq} change (record withdrawn from your view)"
        if self.kind == "proof":
            return f"{self.origin}:{self.seq} proof checked against the origin's checkpoint"
        return "heartbeat"


class Subscriber:
    """Checks a stream's messages in order and keeps the cursor they add up to."""

    def __init__(
        self, bundle: TrustBundle, cursor: dict[str, int] | None = None, proved: dict[str, int] | None = None
    ) -> None:
        self.bundle = bundle
        self.verifier = EventVerifier(bundle)
        self.cursor: dict[str, int] = dict(cursor or {})
        # Proofs owed from before this session, per origin: held until the node says it sent them again.
        self.floor = {o: s for o, s in (proved or {}).items() if s < self.cursor.get(o, 0)}
        self.leaves: dict[tuple[str, int], bytes] = {}  # changes awaiting their proof: their leaf hash
        self.unproved: dict[str, set[int]] = {}  # events taken whose proof is still to come, per origin

    def take(self, message: subscription_pb2.SubscribeResponse) -> list[Taken]:
        """Every item of a message, in order; the first that does not check out raises :class:`StreamInvalid`."""
        return [self.take_item(item) for item in message.items]

    def take_item(self, item: subscription_pb2.StreamItem) -> Taken:
        body = item.WhichOneof("body")
        if body == "event":
            return self._event(item.event)
        if body == "change":
            return self._change(item.change)
        if body == "proof":
            return self._proof(item.proof)
        if body == "heartbeat":
            for position in item.heartbeat.cursor:
                if position.seq < self.cursor.get(position.origin, 0):
                    raise StreamInvalid(f"heartbeat moves {position.origin} back to {position.seq}")
                self.cursor[position.origin] = position.seq
            for position in item.heartbeat.proofs_resent:
                if position.origin in self.floor:
                    self.floor[position.origin] = max(self.floor[position.origin], position.seq)
                    if self.floor[position.origin] >= self.cursor.get(position.origin, 0):
                        del self.floor[position.origin]
            return Taken("heartbeat")
        raise StreamInvalid(f"an item this subscriber does not know ({body})")

    def proved(self) -> dict[str, int]:
        """Per origin, the seq up to which every event taken has its proof: what to send as ``proved`` on resuming."""
        return {
            origin: min(self.floor.get(origin, seq), min(self.unproved.get(origin) or {seq + 1}) - 1)
            for origin, seq in sorted(self.cursor.items())
        }

    def _advance(self, origin: str, seq: int) -> None:
        held = self.cursor.get(origin, 0)
        if seq <= held:
            raise StreamInvalid(f"{origin}:{seq} sent again: the cursor is already at {held}")
        self.cursor[origin] = seq

    def _event(self, streamed: subscription_pb2.StreamedEvent) -> Taken:
        try:
            verified = self.verifier.verify(streamed.envelope, streamed.origin)
        except EventRejected as exc:
            where = f"{streamed.origin}:{streamed.seq}"
            raise StreamInvalid(f"{where}: the envelope does not verify: {exc.message}") from None
        if verified.event.seq != streamed.seq:
            raise StreamInvalid(f"{streamed.origin}:{streamed.seq} carries event {verified.event.seq}")
        proved = False
        if streamed.HasField("proof"):
            proof = log_pb2.InclusionProof()
            proof.CopyFrom(streamed.proof)
            proof.envelope.CopyFrom(streamed.envelope)  # sent once, in the event
            self._check(proof)
            proved = True
        self._advance(streamed.origin, streamed.seq)
        if not proved:
            self.unproved.setdefault(streamed.origin, set()).add(streamed.seq)
        sampling = streamed.sampling if streamed.HasField("sampling") else None
        return Taken("event", streamed.origin, streamed.seq, verified.event, proved, sampling)

    def _change(self, change: subscription_pb2.StreamedChange) -> Taken:
        proved = False
        if change.HasField("proof"):
            self._check_leaf(change.proof, change.leaf_hash)
            proved = True
        else:
            self.leaves[(change.origin, change.seq)] = change.leaf_hash
        self._advance(change.origin, change.seq)
        return Taken("change", change.origin, change.seq, proved=proved)

    def _proof(self, proof: log_pb2.InclusionProof) -> Taken:
        if proof.HasField("envelope"):
            self._check(proof)
            self.unproved.get(proof.origin, set()).discard(proof.seq)
        else:
            leaf = self.leaves.pop((proof.origin, proof.seq), None)
            if leaf is None:
                raise StreamInvalid(f"{proof.origin}:{proof.seq}: a proof without an envelope for no change sent")
            self._check_leaf(proof, leaf)
        return Taken("proof", proof.origin, proof.seq, proved=True)

    def _check(self, proof: log_pb2.InclusionProof) -> None:
        try:
            check_inclusion(proof, self.bundle)
        except ProofInvalid as exc:
            raise StreamInvalid(f"{proof.origin}:{proof.seq}: {exc}") from None

    def _check_leaf(self, proof: log_pb2.InclusionProof, leaf: bytes) -> None:
        """A change's proof: the leaf hash it announced is in the log the origin signed."""
        try:
            checkpoint = self.bundle.verify_checkpoint(proof.origin, proof.checkpoint.note)
        except CredexError as exc:
            raise StreamInvalid(f"{proof.origin}:{proof.seq}: the checkpoint does not verify: {exc}") from None
        if checkpoint.size != proof.tree_size or not verify_inclusion(
            leaf, proof.seq - 1, proof.tree_size, list(proof.hashes), checkpoint.root
        ):
            raise StreamInvalid(f"{proof.origin}:{proof.seq}: the change's leaf is not in the signed log")


def load_cursor(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The cursor saved at ``path`` and how far its events are proved; empty if there is none yet.

    A file that is not a cursor is an error, not a fresh start: resuming from nothing would take
    everything again.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, {}
    except (OSError, ValueError) as exc:
        raise StreamInvalid(f"cannot read the cursor file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != CURSOR_FORMAT:
        raise StreamInvalid(f"{path} is not a {CURSOR_FORMAT} file")
    found = []
    for name in ("positions", "proved"):
        value = data.get(name, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in value.items()
        ):
            raise StreamInvalid(f"{path} is not a {CURSOR_FORMAT} file ({name})")
        found.append(dict(value))
    return found[0], found[1]


def save_cursor(path: Path, cursor: dict[str, int], proved: dict[str, int] | None = None) -> None:
    """Write the cursor so that a crash leaves the old file or the new one, never half of one."""
    text = json.dumps(
        {
            "format": CURSOR_FORMAT,
            "positions": dict(sorted(cursor.items())),
            "proved": dict(sorted((proved or {}).items())),
        },
        indent=1,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def positions(cursor: dict[str, int]) -> list[subscription_pb2.Position]:
    return [subscription_pb2.Position(origin=o, seq=s) for o, s in sorted(cursor.items())]
