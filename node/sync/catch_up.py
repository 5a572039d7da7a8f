"""Sync: the repair path beside Kafka.

Every few seconds the node asks each origin (or, if it does not answer, any other
member) how far its log goes. When this node is behind and Kafka has not closed
the distance by the next probe — a node that started late, a sequence gap, a
broker that lost its log — it fetches exactly the missing stretches over
FetchEvents and passes them through the same intake as Kafka messages: they are
verified against the origin's key, so who relays them does not matter. An event
announced on Kafka by a withheld notice (it may not cross the bus) is fetched at
the next probe, without first giving Kafka a chance to bring it.

The missing stretches are fetched in rounds: all of a round's stretches (withheld
seqs are many one-event stretches scattered through a log Kafka brought) are asked
for at once, several requests in flight, and applied as one batch, while the next
round is already being fetched. So a log with a withheld event every fifty costs a
round trip per few thousand events, not one per event.

A checkpoint tells sync how far an origin's log goes, but only as far as some
member can serve: what a checkpoint claims beyond the highest ``head_seq`` any
member answers is not fetched. Such a checkpoint (an origin that signed more
than it published, or a claim of 10^12 events) is "unreachable": sync asks the
members again with a growing pause instead of every probe, and once it has been
pending for ``sync.unreachable_alarm_seconds`` it raises a ``checkpoint.unreachable``
alarm, resolved by itself if the events ever arrive.

A withheld notice is unsigned, so the seq it gives is capped at the head the
probe reports and forgotten once the missing events were fetched: a notice of
seq 2^63-1 buys its sender one early fetch, not a standing one. Sync fetches the
very seqs the notices named (as long as they are few enough to keep, see
:data:`~credex.node.chain.wanted.MAX_WITHHELD_SEQS`), not every missing seq up to the
highest: the others are on their way over Kafka, on a partition that lags.

Sync never asks for what this node holds or is taking in: what is missing is what
the store lacks less what intake has verified and is storing at that moment
(:meth:`~credex.node.intake.Intake.applying`), read in that order so that a seq
committed in between is in one or the other. So an event Kafka delivers while sync
looks is not fetched again, verified again and counted as a replay.

A member that answers FetchEvents with PERMISSION_DENIED does not recognise this
node as a peer (no client certificate, or one the bundle does not bind): its
non-public events cannot replicate here. That is logged as an error when it
starts and when it ends, counted (``credex_sync_fetch_denied``), and raised as
a ``sync.not_a_peer`` alarm that does not freeze anything and resolves itself
once fetching works again.

What to fetch beyond what the probes show, sync takes from the wanted ranges
(:class:`~credex.node.chain.WantedRanges`) at each round: intake puts gaps and
withheld notices there, the checkpoint keeper the sizes that checkpoints and
revocation roots show. Sync is the only one that takes; nobody calls into it.

One origin's failure, of whatever kind, is logged and does not stop the others
or the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import asyncpg
import grpc
from prometheus_client import Counter

from credex.node.cancellation import cancel_and_wait, pause
from credex.node.chain import AlarmKind, Alarms, CheckpointKeeper, WantedRanges, Why
from credex.node.chain.wanted import Wanted, stretches
from credex.node.channels import PeerChannels
from credex.node.config import NodeConfig
from credex.node.intake import Intake
from credex.node.intake.peer_events import Checked
from credex.node.metrics import METRICS
from credex.node.store.database import RETRYABLE
from credex.node.trust import TrustProvider
from credex.v1 import exchange_pb2, log_pb2

log = logging.getLogger(__name__)

# One round of fetching: at most this many events and requests, this many requests in flight at once.
ROUND_EVENTS = 8000
MAX_REQUESTS = 64
CONCURRENT_FETCHES = 8

FETCH_DENIED = Counter(
    "credex_sync_fetch_denied",
    "FetchEvents calls a member refused with PERMISSION_DENIED: it does not take this node for a peer",
    ["origin", "peer"],
)


@dataclass
class Unreachable:
    """An origin's checkpoint claims more events than any member serves."""

    claimed: int  # the largest size claimed
    served: int = 0  # the most any member served when last asked
    source: str | None = None  # who served that
    attempts: int = 0  # rounds of asking every member, each one pause longer than the last
    delay: float = 0.0  # the pause before the next round
    retry_at: float = 0.0  # monotonic time of the next round


@dataclass(frozen=True, slots=True)
class Ask:
    """One FetchEvents request: a stretch of ``limit`` seqs from ``from_seq``, or the scattered ``seqs``."""

    from_seq: int = 0
    limit: int = 0
    seqs: tuple[int, ...] = ()

    @property
    def last(self) -> int:
        """The highest seq asked for."""
        return self.seqs[-1] if self.seqs else self.from_seq + self.limit - 1

    def request(self, origin: str) -> exchange_pb2.FetchEventsRequest:
        return exchange_pb2.FetchEventsRequest(origin=origin, from_seq=self.from_seq, limit=self.limit, seqs=self.seqs)


class Sync:
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        trust: TrustProvider,
        intake: Intake,
        channels: PeerChannels,
        keeper: CheckpointKeeper,
        alarms: Alarms,
        wanted: WantedRanges,
    ) -> None:
        self.config = config
        self.pool = pool
        self.trust = trust
        self.intake = intake
        self.keeper = keeper
        self.alarms = alarms
        self.wanted = wanted  # what intake and the keeper found missing; taken at each round
        self.channels = channels
        # origin -> (when it was first seen behind, contiguous_seq then)
        self._behind: dict[str, tuple[float, int]] = {}
        # origin -> the largest checkpoint size seen, which the log must reach
        self._wanted: dict[str, int] = {}
        # origin -> a checkpoint claiming more than any member serves
        self._unreachable: dict[str, Unreachable] = {}
        self._settled: set[str] = set()  # origins whose unreachable alarm was resolved since start
        # origin -> what withheld notices announced (the highest seq, and the exact seqs while few enough):
        # Kafka will not bring it, do not wait for it
        self._withheld: dict[str, Wanted] = {}
        # endpoint -> the member that refused this node as a peer, while it does; and the endpoints
        # whose FetchEvents worked since start (a refusal alarm left open by a previous run is resolved)
        self._denied: dict[str, str] = {}
        self._fetching: set[str] = set()
        # Members that read a FetchEvents by seqs as a stretch of none (they predate seqs): asked a seq at a time.
        self._before_seqs: set[str] = set()

    def take_wanted(self) -> None:
        """Take what intake and the checkpoint keeper put in the wanted ranges since the last round."""
        for want in self.wanted.take():
            if want.why is Why.GAP:  # Kafka gets one probe interval from when the gap was seen
                self._behind.setdefault(want.origin, (want.noticed, want.held))
            elif want.why is Why.WITHHELD:
                known = self._withheld.get(want.origin)
                self._withheld[want.origin] = want if known is None else known.merged(want)
            else:  # a checkpoint or a revocation root beyond what is held
                self._wanted[want.origin] = max(want.upto, self._wanted.get(want.origin, 0))

    def peers(self) -> list[str]:
        return [o for o in self.trust.current.origins if o != self.config.origin]

    def sources(self, origin: str) -> list[str]:
        """The origin itself first, then every other member that may hold a copy."""
        first = self.trust.current.member(origin)
        ordered = [first] if first else []
        ordered += [m for m in self.trust.current.members if m.origin not in (origin, self.config.origin)]
        return [m.endpoint for m in ordered if m and m.endpoint]

    def withheld(self, origin: str) -> int | None:
        """The seq of ``origin`` that withheld notices announced and sync has yet to fetch, if any."""
        known = self._withheld.get(origin)
        return None if known is None else known.upto

    def unreachable(self, origin: str) -> Unreachable | None:
        """The checkpoint of ``origin`` no member serves the events of, if any."""
        return self._unreachable.get(origin)

    async def run(self) -> None:
        """Probe and repair every origin, round after round, whatever fails in one round."""
        failures = 0
        while True:
            try:
                await self.round()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = min(failures + 1, 6)
                log.warning("sync: round failed (%s: %s); next round after a longer pause", type(exc).__name__, exc)
            wait = min(self.config.sync.probe_seconds * 2**failures, 60.0)
            if failures:
                await pause(wait)
            else:  # a withheld notice cuts the pause short: only this fetch can fill it
                await self.wanted.urgent(wait)

    async def round(self) -> None:
        await self.alarms.load()  # an operator may have cleared an alarm
        for origin in self.peers():
            if origin in self.alarms.frozen:
                continue
            try:
                await self.keeper.check_revocations(origin)  # a refresh may have brought a revoked root
                await self.fetch_checkpoint(origin)
                await self.sync_origin(origin)
            except asyncio.CancelledError:
                raise
            except RETRYABLE as exc:
                log.warning("sync of %s: %s", origin, exc)
            except Exception:
                log.exception("sync of %s failed; going on with the other origins", origin)

    async def sync_origin(self, origin: str) -> int:
        """Probe ``origin``'s head; fetch what is missing if Kafka does not bring it. Returns events applied.

        Kafka gets one probe interval without progress before gRPC steps in, so
        a node that is merely working through a backlog is not sent everything twice.
        """
        self.take_wanted()
        contiguous = await self._contiguous(origin)
        head, source = await self._probe(origin)
        if source is None:
            self._behind.pop(origin, None)
            return 0
        if known := self._withheld.get(origin):  # a notice is unsigned: it cannot announce more than is served
            self._withheld[origin] = replace(known, upto=min(known.upto, head))
        head, sources = await self._target(origin, head, source)
        if head <= contiguous:
            self._behind.pop(origin, None)
            self._forget_withheld(origin)
            return 0
        now = time.monotonic()
        since, seen = self._behind.get(origin, (now, -1))
        announced = self._withheld.get(origin)
        withheld = 0 if announced is None else announced.upto
        if contiguous != seen:  # first probe behind, or Kafka made progress: Kafka gets one more probe
            self._behind[origin] = (now, contiguous)
            stalled = False
        else:
            stalled = now - since >= self.config.sync.probe_seconds
        only: frozenset[int] | None = None
        if stalled:
            upto = head
        elif withheld > contiguous:
            # Announced as withheld from the bus: only gRPC brings it, no use waiting for Kafka. What else
            # lies below the announced seq a lagging partition may still be bringing, and what lies beyond
            # it Kafka is bringing: fetching those too would be replays. So just the seqs announced.
            upto = withheld
            exact = None if announced is None else announced.seqs
            only = None if exact is None else frozenset(s for s in exact if contiguous < s <= head)
        else:
            return 0
        applied = await self.fetch_missing(origin, upto, sources, only)
        if upto == head and only is None:  # every missing seq up to the head was asked for
            # Just the seqs notices named were: a gap elsewhere keeps the wait Kafka gets for it, or
            # unsigned notices coming one after another would put its fetch off for good.
            self._behind.pop(origin, None)
        self._forget_withheld(origin)  # fetched what was served; a later notice starts anew
        return applied

    def _forget_withheld(self, origin: str) -> None:
        self._withheld.pop(origin, None)

    async def _target(self, origin: str, head: int, source: str) -> tuple[int, list[str]]:
        """How far to fetch ``origin``'s log, and from whom: up to its checkpoints, as far as anyone serves."""
        others = [s for s in self.sources(origin) if s != source]
        wanted = self._wanted.get(origin, 0)
        if wanted <= head:
            await self._reachable(origin)
            return head, [source, *others]
        now = time.monotonic()
        state = self._unreachable.get(origin)
        if state is None or now >= state.retry_at or wanted > state.claimed:
            state = await self._ask_everyone(origin, wanted, head, source, others, state)
            if state is None:
                await self._reachable(origin)
                return wanted, [source, *others]
        best = [state.source] if state.source else []
        return max(head, state.served), [*best, *[s for s in (source, *others) if s not in best]]

    async def _ask_everyone(
        self, origin: str, wanted: int, head: int, source: str, others: list[str], state: Unreachable | None
    ) -> Unreachable | None:
        """One round of asking every member how far it serves ``origin``; None if someone reaches ``wanted``."""
        served, best = head, source
        for endpoint in others:
            try:
                response = await self._fetch(endpoint, Ask(1, 0).request(origin))
            except grpc.aio.AioRpcError:
                continue
            if response.head_seq > served:
                served, best = int(response.head_seq), endpoint
        if served >= wanted:
            return None
        state = state or Unreachable(wanted)
        state.claimed, state.served, state.source = wanted, served, best
        state.attempts += 1
        state.delay = min(
            self.config.sync.probe_seconds * 2**state.attempts, self.config.sync.unreachable_backoff_max_seconds
        )
        state.retry_at = time.monotonic() + state.delay
        self._unreachable[origin] = state
        self._settled.discard(origin)
        log.info(
            "sync of %s: a checkpoint claims %d events, no member serves more than %d; asking again in %.0f s",
            origin,
            wanted,
            served,
            state.delay,
        )
        await self._alarm_if_overdue(origin, served)
        return state

    async def _alarm_if_overdue(self, origin: str, served: int) -> None:
        """Raise the alarm once a checkpoint has stayed beyond what anyone serves for too long."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT size, note, source, first_seen, extract(epoch FROM now() - first_seen)::float8 AS age"
                " FROM checkpoints WHERE origin = $1 AND state = 'pending' AND size > $2"
                " ORDER BY first_seen LIMIT 1",
                origin,
                served,
            )
            if row is None or row["age"] < self.config.sync.unreachable_alarm_seconds:
                return
            await self.alarms.raise_once(
                conn,
                origin,
                AlarmKind.CHECKPOINT_UNREACHABLE,
                f"{origin} signed a checkpoint of {row['size']} events {row['age']:.0f} s ago and no member serves"
                f" more than {served}; sync stops fetching beyond that and asks again with a growing pause."
                f" Ask {origin}'s operator whether it published its log; if it did not sign this, revoke its key",
                {
                    "size": row["size"],
                    "served": served,
                    "note": row["note"],
                    "received_from": row["source"],
                    "first_seen": row["first_seen"].isoformat(),
                },
                same={"size": row["size"]},
            )

    async def _reachable(self, origin: str) -> None:
        """Every checkpoint of ``origin`` can be served again: forget the backoff, resolve the alarm."""
        if self._unreachable.pop(origin, None) is None and origin in self._settled:
            return
        async with self.pool.acquire() as conn:
            await self.alarms.resolve(
                conn, origin, AlarmKind.CHECKPOINT_UNREACHABLE, "the events of every checkpoint can be fetched again"
            )
        self._settled.add(origin)

    async def fetch_missing(
        self, origin: str, head: int, sources: Sequence[str], only: frozenset[int] | None = None
    ) -> int:
        """Fetch every seq of ``origin`` up to ``head`` (or of ``only``) neither held nor being applied,
        from the first source that serves them."""
        applied = 0
        for endpoint in sources:
            try:
                while True:  # a pass from the watermark; the next one picks up what a member served short
                    got = await self._fetch_pass(endpoint, origin, head, only)
                    applied += got
                    if got == 0:
                        break  # nothing (more) usable from this source: all held, rejected or replays
            except grpc.aio.AioRpcError as exc:
                log.info("sync of %s from %s: %s", origin, endpoint, exc.details() or exc.code().name)
            if only is not None and not await self._missing(origin, head, 0, only):
                break
            if await self._contiguous(origin) >= head:
                break
        return applied

    async def _fetch_pass(self, endpoint: str, origin: str, head: int, only: frozenset[int] | None = None) -> int:
        """One pass over what is missing, in rounds: while round k is stored, round k+1 is fetched and verified.

        A round is every missing stretch up to :data:`ROUND_EVENTS` events (withheld seqs
        scattered through a log that Kafka brought are many one-event stretches), asked for
        at once, :data:`CONCURRENT_FETCHES` requests in flight. Its signatures are checked
        (in the signature workers) as soon as it is fetched, so PostgreSQL storing one round
        and the workers verifying the next run at once, as on the Kafka path. A pass ends
        when nothing is left below ``head`` or a round brings nothing; it returns the events applied.
        """
        applied = 0
        after = 0  # seqs up to here were asked for in this pass
        storing: asyncio.Task[int] | None = None
        checking: asyncio.Task[Checked] | None = None
        try:
            while True:
                asks = await self._missing(origin, head, after, only)
                envelopes = await self._fetch_round(endpoint, origin, asks) if asks else []
                if envelopes:
                    after = max(ask.last for ask in asks)
                    checking = asyncio.create_task(self.intake.check(origin, envelopes))
                if storing is not None:
                    applied += await storing
                    storing = None
                if checking is None:
                    return applied
                checked = await checking
                checking = None
                storing = asyncio.create_task(self._apply(endpoint, origin, checked, len(envelopes)))
        finally:
            await cancel_and_wait(checking, storing)  # a failed fetch, or cancelled: what is under way ends with us

    async def _apply(self, endpoint: str, origin: str, checked: Checked, fetched: int) -> int:
        result = await self.intake.apply(checked, f"sync:{endpoint}")
        METRICS.sync_fetched.labels(self.config.origin, origin).inc(fetched)
        return result.applied

    async def _fetch_round(self, endpoint: str, origin: str, asks: Sequence[Ask]) -> list[bytes]:
        """The envelopes of every ask, asked for :data:`CONCURRENT_FETCHES` at a time, in the asks' order.

        A member that predates asking by seqs reads such an ask as a stretch of none. It is
        asked for the seqs one at a time, at most :data:`MAX_REQUESTS` of them in a round
        (the pass's next rounds ask for the rest), and remembered as such.
        """
        gate = asyncio.Semaphore(CONCURRENT_FETCHES)
        singles_left = MAX_REQUESTS

        async def fetched(ask: Ask) -> tuple[list[bytes], int]:
            async with gate:
                response = await self._fetch(endpoint, ask.request(origin))
            return [e.SerializeToString() for e in response.envelopes], response.head_seq

        async def one_at_a_time(seqs: Sequence[int]) -> list[bytes]:
            nonlocal singles_left
            taken = seqs[: max(0, singles_left)]
            singles_left -= len(taken)
            parts = await asyncio.gather(*(fetched(Ask(seq, 1)) for seq in taken))
            return [envelope for envelopes, _ in parts for envelope in envelopes]

        async def one(ask: Ask) -> list[bytes]:
            nonlocal singles_left
            if ask.seqs and endpoint in self._before_seqs:
                return await one_at_a_time(ask.seqs)
            envelopes, head = await fetched(ask)
            if not ask.seqs or envelopes or head < ask.seqs[0]:
                return envelopes
            # It claims to hold the first seq (it holds every seq up to its head) and served none: either
            # it predates seqs, or it serves nothing it claims. The first seq alone, as a stretch, tells.
            singles_left -= 1
            first, _ = await fetched(Ask(ask.seqs[0], 1))
            if not first:
                return []  # nothing from this member: fetch_missing goes on to the next
            if endpoint not in self._before_seqs:
                self._before_seqs.add(endpoint)
                log.info("sync: %s predates FetchEvents by seqs; it is asked for them one at a time", endpoint)
            return first + await one_at_a_time(ask.seqs[1:])

        parts = await asyncio.gather(*(one(ask) for ask in asks))
        return [envelope for part in parts for envelope in part]

    async def _missing(self, origin: str, head: int, after: int, only: frozenset[int] | None = None) -> list[Ask]:
        """FetchEvents requests for the next :data:`ROUND_EVENTS` seqs up to ``head``
        (of ``only``, if given) that are neither held nor being applied by intake.

        Starts past the watermark and past ``after``; every missing stretch is cut into
        requests of at most ``sync.fetch_limit`` events. What intake is applying is read
        before the store: a seq it commits in between is then in one or the other.
        """
        applying = self.intake.applying(origin)
        if only is not None:
            return await self._missing_of(origin, head, after, only, applying)
        per_request = self.config.sync.fetch_limit
        async with self.pool.acquire() as conn:
            contiguous = int(
                await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", origin) or 0
            )
            start = max(contiguous, after)
            if start >= head:
                return []
            # Each held seq with the one held before it (``start`` stands for the watermark); a jump is a
            # missing stretch, and the sentinel ``head + 1`` closes the one at the end. LIMIT stops the scan.
            gaps = await conn.fetch(
                "SELECT prev + 1 AS first, seq - 1 AS last FROM ("
                "  SELECT seq, lag(seq, 1, $2::bigint) OVER (ORDER BY seq) AS prev FROM ("
                "    SELECT seq FROM events WHERE origin = $1 AND seq > $2 AND seq <= $3"
                "    UNION ALL SELECT $3::bigint + 1) held"
                ") steps WHERE seq > prev + 1 ORDER BY seq LIMIT $4",
                origin,
                start,
                head,
                ROUND_EVENTS,  # a round holds at most this many seqs, so at most this many stretches
            )
        return _requests(((int(r["first"]), int(r["last"])) for r in gaps), applying, per_request)

    async def _missing_of(
        self, origin: str, head: int, after: int, only: frozenset[int], applying: frozenset[int]
    ) -> list[Ask]:
        """The requests for the seqs of ``only`` past the watermark and ``after``, up to ``head``, not held."""
        async with self.pool.acquire() as conn:
            contiguous = int(
                await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", origin) or 0
            )
            start = max(contiguous, after)
            wanted = sorted(s for s in only if start < s <= head and s not in applying)
            held = {
                int(r["seq"])
                for r in await conn.fetch(
                    "SELECT seq FROM events WHERE origin = $1 AND seq = ANY($2::bigint[])", origin, wanted
                )
            }
        return _requests(stretches(s for s in wanted if s not in held), frozenset(), self.config.sync.fetch_limit)

    async def fetch_checkpoint(self, origin: str) -> None:
        """Ask the origin (or, failing it, any member) for its newest checkpoint; a forged one is evidence."""
        for endpoint in self.sources(origin):
            try:
                checkpoint = await self.channels.log(endpoint).GetCheckpoint(
                    log_pb2.GetCheckpointRequest(origin=origin), timeout=self.config.sync.rpc_timeout_seconds
                )
            except grpc.aio.AioRpcError:
                continue
            receipt = await self.keeper.receive(origin, checkpoint.note, f"sync:{endpoint}")
            if not receipt.rejected:
                return

    async def _probe(self, origin: str) -> tuple[int, str | None]:
        for endpoint in self.sources(origin):
            try:
                response = await self._fetch(endpoint, Ask(1, 0).request(origin))
            except grpc.aio.AioRpcError:
                continue
            return int(response.head_seq), endpoint
        return 0, None

    async def _fetch(self, endpoint: str, request: exchange_pb2.FetchEventsRequest) -> exchange_pb2.FetchEventsResponse:
        stub = self.channels.exchange(endpoint)
        try:
            response = await stub.FetchEvents(request, timeout=self.config.sync.rpc_timeout_seconds)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                await self._not_a_peer(endpoint, request.origin, exc.details() or "")
            raise
        if endpoint not in self._fetching:
            await self._a_peer_again(endpoint)
        return response

    def _member_at(self, endpoint: str, origin: str) -> str:
        """The member that answers at ``endpoint`` (``origin`` if the bundle no longer says)."""
        return next((m.origin for m in self.trust.current.members if m.endpoint == endpoint), origin)

    async def _not_a_peer(self, endpoint: str, origin: str, details: str) -> None:
        """A member refused FetchEvents: say so once, count every time, raise the alarm."""
        member = self._member_at(endpoint, origin)
        FETCH_DENIED.labels(self.config.origin, member).inc()
        self._fetching.discard(endpoint)
        if endpoint in self._denied:
            return
        message = (
            f"cannot fetch: not recognised as a peer by {member} at {endpoint} ({details or 'PERMISSION_DENIED'});"
            f" its non-public events do not replicate to {self.config.origin}. Check that grpc.tls.cert/key are set"
            f" and that the trust bundle binds this node's certificate (`credex trust add-member --tls-cert`)"
        )
        log.error("sync: %s", message)
        async with self.pool.acquire() as conn:
            await self.alarms.raise_once(conn, member, AlarmKind.SYNC_NOT_A_PEER, message, {"endpoint": endpoint})
        self._denied[endpoint] = member  # only once the alarm is raised: else the next refusal tries again

    async def _a_peer_again(self, endpoint: str) -> None:
        """FetchEvents at ``endpoint`` works (first time since start, or after a refusal): resolve the alarm."""
        member = self._denied.pop(endpoint, None)
        async with self.pool.acquire() as conn:
            await self.alarms.resolve(
                conn,
                member or self._member_at(endpoint, ""),
                AlarmKind.SYNC_NOT_A_PEER,
                f"{endpoint} serves FetchEvents again",
            )
        if member is not None:
            log.warning("sync: %s at %s recognises this node as a peer again; fetching works", member, endpoint)
        self._fetching.add(endpoint)

    async def _contiguous(self, origin: str) -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", origin)
        return int(value or 0)


def _requests(missing: Iterable[tuple[int, int]], applying: frozenset[int], per_request: int) -> list[Ask]:
    """FetchEvents asks for missing stretches (first, last), less the seqs being applied: at most
    :data:`MAX_REQUESTS` asks of at most ``per_request`` events, :data:`ROUND_EVENTS` in all.

    A stretch of two or more seqs is asked for as one; single seqs (withheld events, or seqs
    left between those being applied) are gathered into asks by seqs, so scattered seqs cost
    a request per ``per_request`` of them, not one each.
    """
    asks: list[Ask] = []
    singles: list[int] = []
    budget = ROUND_EVENTS

    def requests() -> int:
        return len(asks) + -(-len(singles) // per_request)

    for first, last in missing:
        seq = first
        while seq <= last and budget > 0 and requests() < MAX_REQUESTS:
            if seq in applying:
                seq += 1
                continue
            end = min(last, seq + min(per_request, budget) - 1)
            if applying:  # stop short of the next seq intake is applying
                end = next((s for s in range(seq + 1, end + 1) if s in applying), end + 1) - 1
            if end == seq:
                singles.append(seq)
            else:
                asks.append(Ask(seq, end - seq + 1))
            budget -= end - seq + 1
            seq = end + 1
    asks += [Ask(seqs=tuple(singles[i : i + per_request])) for i in range(0, len(singles), per_request)]
    return asks
