"""The origin's side of witnessing: ask the witnesses the bundle names to cosign our newest checkpoint.

For each witness of our log without a cosignature on our newest checkpoint, the
collector sends AddCheckpoint (over C2SP tlog-witness's HTTP wire to a witness the
bundle gives a ``witness_url``, else over the peer gRPC channel) with a consistency proof from
the last checkpoint that witness cosigned (as ``checkpoint_cosignatures`` remembers;
0 if none). A witness that answers with another size (it lost our record of it,
or cosigned a checkpoint another way) is asked once more from its size. A
returned cosignature is verified with the witness key in the bundle before it is
kept: its line is merged into ``checkpoints.note``, so every checkpoint this node
serves (GetCheckpoint, the checkpoints embedded in proofs) carries it, and
recorded in ``checkpoint_cosignatures``. A witness that fails is asked again after
a growing pause, so one that is down costs nothing between attempts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import grpc
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credex.crypto.cosignature import cosignatures, with_lines, witness_name
from credex.crypto.trust import TrustBundle
from credex.errors import CredexError
from credex.node.cancellation import pause
from credex.node.chain import LogBook
from credex.node.channels import PeerChannels
from credex.node.witness import wire
from credex.node.witness.cosigner import Outcome
from credex.v1 import witness_pb2

log = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = 10.0
MAX_PAUSE_SECONDS = 60.0


class CosignatureInvalid(CredexError):
    """A witness's answer that cannot be kept, or a witness that cannot be asked; the message says why."""


@dataclass(frozen=True, slots=True)
class _Latest:
    size: int
    root: bytes
    note: str


class CosignatureCollector:
    def __init__(
        self,
        me: str,
        pool: asyncpg.Pool,
        bundle: Callable[[], TrustBundle],
        logbook: LogBook,
        channels: PeerChannels,
    ) -> None:
        self.me = me
        self.pool = pool
        self.bundle = bundle
        self.logbook = logbook
        self.channels = channels
        self._pause: dict[str, tuple[float, int]] = {}  # witness -> (not before, failures)

    async def run(self, every_seconds: float) -> None:
        """Collect for each new checkpoint as it is signed; survive any one round's failure."""
        while True:
            await pause(min(every_seconds, 1.0))
            try:
                await self.collect()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("collecting cosignatures of %s's checkpoint failed; trying again", self.me)

    async def collect(self) -> dict[str, str]:
        """Ask every witness still missing on our newest checkpoint; what became of each, by witness."""
        bundle = self.bundle()
        policy = bundle.witness_policy(self.me)
        if policy is None:
            return {}
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT size, root, note FROM checkpoints WHERE origin = $1 AND state = 'own'"
                " ORDER BY size DESC LIMIT 1",
                self.me,
            )
            if row is None:
                return {}
            latest = _Latest(int(row["size"]), bytes(row["root"]), str(row["note"]))
            done = {
                r["witness"]
                for r in await conn.fetch(
                    "SELECT witness FROM checkpoint_cosignatures WHERE origin = $1 AND size = $2", self.me, latest.size
                )
            }
        now = time.monotonic()
        asked = [w for w in policy.witnesses if w not in done and self._pause.get(w, (0.0, 0))[0] <= now]
        results = await asyncio.gather(*(self._ask(bundle, w, latest) for w in asked))
        return dict(zip(asked, results, strict=True))

    async def _ask(self, bundle: TrustBundle, witness: str, latest: _Latest) -> str:
        try:
            outcome = await self._cosign(bundle, witness, latest)
        except Exception as exc:
            # Whatever went wrong with one witness (a refusal, a bad answer, our own database) puts off
            # that witness alone: the others are asked this round, this one after a growing pause.
            failures = self._pause.get(witness, (0.0, 0))[1] + 1
            pause = min(MAX_PAUSE_SECONDS, 0.5 * 2**failures)
            self._pause[witness] = (time.monotonic() + pause, failures)
            if isinstance(exc, grpc.aio.AioRpcError):
                text = exc.details() or exc.code().name
            elif isinstance(exc, CosignatureInvalid):
                text = str(exc)
            else:
                log.exception("asking witness %s to cosign %s's checkpoint failed unexpectedly", witness, self.me)
                text = f"{type(exc).__name__}: {exc}"
            log.warning("witness %s did not cosign %s's checkpoint %d: %s", witness, self.me, latest.size, text)
            return f"failed: {text}"
        self._pause.pop(witness, None)
        return outcome

    async def _cosign(self, bundle: TrustBundle, witness: str, latest: _Latest) -> str:
        member = bundle.member(witness)
        key = bundle.witness_key(witness)
        if member is None or not (member.witness_url or member.endpoint) or key is None:
            raise CosignatureInvalid(f"{witness} has no endpoint or witness key in the trust bundle")
        async with self.pool.acquire() as conn:
            old = int(
                await conn.fetchval(
                    "SELECT coalesce(max(size), 0) FROM checkpoint_cosignatures WHERE origin = $1 AND witness = $2",
                    self.me,
                    witness,
                )
            )
        for _ in range(2):  # once from what we remember, once more from what the witness says it holds
            if old > latest.size:
                raise CosignatureInvalid(
                    f"{witness} says it cosigned {self.me}'s log at size {old}, beyond our newest checkpoint"
                    f" {latest.size}: it holds a checkpoint we did not sign"
                )
            tree = await self.logbook.tree(self.me)
            proof = await tree.consistency_proof(old, latest.size) if 0 < old < latest.size else []
            if member.witness_url:
                outcome = await self._over_http(member.witness_url, old, proof, latest)
            else:
                outcome = await self._over_grpc(member.endpoint, old, proof, latest)
            if not outcome.conflict:
                return await self._keep(witness, key, latest, list(outcome.lines))
            old = outcome.witness_size
        raise CosignatureInvalid(f"{witness} answered a conflict twice; its size is {old}")

    async def _over_grpc(self, endpoint: str, old: int, proof: list[bytes], latest: _Latest) -> Outcome:
        response = await self.channels.witness(endpoint).AddCheckpoint(
            witness_pb2.AddCheckpointRequest(
                origin=self.me, old_size=old, consistency=proof, checkpoint=latest.note.encode()
            ),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        if response.conflict:
            return Outcome((), int(response.witness_size))
        if not response.cosignatures:
            raise CosignatureInvalid(f"{endpoint} answered neither a conflict nor a cosignature")
        return Outcome(tuple(response.cosignatures), latest.size)

    async def _over_http(self, prefix: str, old: int, proof: list[bytes], latest: _Latest) -> Outcome:
        """C2SP tlog-witness add-checkpoint: 200 with the cosignature lines, or 409 with the witness's size."""
        url = prefix + wire.PATH
        body = wire.request_body(old, proof, latest.note.encode())
        # httpx's timeout bounds each read, not the answer: a witness sending a byte at a time would
        # hold this round (and every other witness's) for good. The whole exchange has gRPC's deadline.
        try:
            async with (
                asyncio.timeout(RPC_TIMEOUT_SECONDS),
                self.channels.https().stream("POST", url, content=body, timeout=RPC_TIMEOUT_SECONDS) as response,
            ):
                answer = await _bounded(response, wire.MAX_ANSWER)
        except httpx.HTTPError as exc:
            raise CosignatureInvalid(f"{url}: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise CosignatureInvalid(f"{url} did not answer within {RPC_TIMEOUT_SECONDS:g} s") from None
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        try:
            if response.status_code == 200 and answer is not None:
                return Outcome(tuple(wire.read_cosignatures(answer)), latest.size)
            if response.status_code == 409 and kind == wire.SIZE_TYPE and answer is not None:
                return Outcome((), wire.read_size(answer))
        except wire.WireError as exc:
            raise CosignatureInvalid(f"{url} answered {response.status_code}: {exc}") from None
        said = "(an answer over the size limit)" if answer is None else answer[:300].decode(errors="replace").strip()
        raise CosignatureInvalid(f"{url} answered {response.status_code}: {said}")

    async def _keep(self, witness: str, key: Ed25519PublicKey, latest: _Latest, lines: list[str]) -> str:
        """Verify the witness's line against its bundle key, then merge it into the stored note."""
        name = witness_name(witness)
        try:
            found = cosignatures(with_lines(latest.note, lines), {name: key})
        except ValueError as exc:
            raise CosignatureInvalid(f"{witness} answered what cannot be merged: {exc}") from None
        if name not in found:
            raise CosignatureInvalid(f"{witness} answered no valid cosignature by its key in the trust bundle")
        line = found[name].line
        async with self.pool.acquire() as conn, conn.transaction():
            note = str(
                await conn.fetchval(
                    "SELECT note FROM checkpoints WHERE origin = $1 AND size = $2 AND root = $3 FOR UPDATE",
                    self.me,
                    latest.size,
                    latest.root,
                )
            )
            if name not in cosignatures(note, {name: key}):  # another replica of this node may have been first
                await conn.execute(
                    "UPDATE checkpoints SET note = $4 WHERE origin = $1 AND size = $2 AND root = $3",
                    self.me,
                    latest.size,
                    latest.root,
                    with_lines(note, [line]),
                )
            await conn.execute(
                "INSERT INTO checkpoint_cosignatures (origin, size, witness, line) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING",
                self.me,
                latest.size,
                witness,
                line,
            )
        self.logbook.latest.forget(self.me)  # the cosigned note is served at once
        return "cosigned"


async def _bounded(response: httpx.Response, limit: int) -> bytes | None:
    """The answer's body, or None past ``limit`` bytes (the rest is not read): a witness cannot flood its log."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
