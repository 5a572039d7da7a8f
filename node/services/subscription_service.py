"""SubscriptionService: filtered, resumable, provable streams, and the authorizations financing streams need.

The edge has admitted the stream against the stream limits and checked every field's
length and form; this module checks what the fields mean (member origins, known kinds
and event types, subjects as records name them, a scenario of the catalogue, one cursor
position per origin), decides what the caller stands for (node/streams/entitlement.py),
and hands the edge the stream. Who gets which event is decided again for every event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import asyncpg
import grpc

from credex.crypto.keys import SigningRefused
from credex.domain.measures import Catalogue, UnknownScenario
from credex.node.authorizations import recording
from credex.node.authorizations import terms as authorizations
from credex.node.chain import CheckpointKeeper, LogBook
from credex.node.config import NodeConfig
from credex.node.ledger import Ledger
from credex.node.metrics import METRICS
from credex.node.services import edge
from credex.node.services.servicer import Servicer
from credex.node.streams.bell import Bell
from credex.node.streams.entitlement import Entitlement, NotEntitled
from credex.node.streams.stream import Filter, Stream
from credex.node.trust import TrustProvider
from credex.v1 import event_pb2, record_pb2, subscription_pb2, subscription_pb2_grpc

_MAY_GRANT = frozenset({"operator"})
_MAY_SUBSCRIBE = frozenset({"public", "government", "peer", "operator", "financing", "supervision"})
MAX_KINDS = 64
MAX_CURSOR = 100  # positions: more than the federation has members
_KINDS = frozenset(v.number for v in record_pb2.Kind.DESCRIPTOR.values if v.number)
_EVENT_TYPES = frozenset(v.number for v in event_pb2.EventType.DESCRIPTOR.values if v.number)


class SubscriptionService(Servicer, subscription_pb2_grpc.SubscriptionServiceServicer):
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        trust: TrustProvider,
        logbook: LogBook,
        keeper: CheckpointKeeper,
    ) -> None:
        super().__init__(config, pool, trust, logbook, keeper)
        self.bell = Bell(pool)
        self.ledger: Ledger | None = None  # set by the server: grants are signed into the node's own log
        self.open: set[Stream] = set()  # the streams being served, for their buffered bytes
        METRICS.streams_open.labels(config.origin).set_function(lambda: len(self.open))
        METRICS.stream_buffered_bytes.labels(config.origin).set_function(lambda: self.buffered_bytes)

    async def Subscribe(  # type: ignore[override]  # the edge writes what this returns
        self,
        request: subscription_pb2.SubscribeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncGenerator[subscription_pb2.SubscribeResponse, None]:
        call = edge.current()
        if call.caller.role not in _MAY_SUBSCRIBE:
            raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, f"role {call.caller.role} may not subscribe")
        try:
            entitlement = Entitlement.of(call.caller, self.config.subscriptions)
        except NotEntitled as exc:
            raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from None
        wanted = self._filter(request.filter)
        positions = self._cursor("cursor", request.cursor)
        proved = self._cursor("proved", request.proved)
        stream = Stream(
            pool=self.pool,
            logbook=self.logbook,
            keeper=self.keeper,
            bell=self.bell,
            settings=self.config.subscriptions,
            entitlement=entitlement,
            filter=wanted,
            positions=positions,
            proved=proved,
        )
        resumed = " ".join(f"{o}:{s}" for o, s in sorted(positions.items())) or "the start"
        call.detail = f"filter {wanted.describe()}; from {resumed}"
        call.summary = lambda: (
            stream.counts.events + stream.counts.changes,
            f"{stream.counts.events} events, {stream.counts.changes} changes, {stream.counts.proofs} later proofs,"
            f" {stream.counts.heartbeats} heartbeats; cursor "
            + " ".join(f"{p.origin}:{p.seq}" for p in stream.cursor()),
        )
        return self._served(stream)

    async def _served(self, stream: Stream) -> AsyncGenerator[subscription_pb2.SubscribeResponse, None]:
        self.open.add(stream)
        try:
            async for message in stream.messages():
                yield message
        finally:
            self.open.discard(stream)

    @property
    def buffered_bytes(self) -> int:
        """What the open streams hold read from the store and not yet written to their subscribers."""
        return sum(stream.buffered_bytes for stream in self.open)

    def _filter(self, given: subscription_pb2.SubscriptionFilter) -> Filter:
        origins = frozenset(self.member(edge_origin(f"filter.origins[{i}]", o)) for i, o in enumerate(given.origins))
        if len(given.kinds) > MAX_KINDS or len(given.event_types) > MAX_KINDS:
            raise edge.invalid(f"filter names more than {MAX_KINDS} kinds or event types")
        for kind in given.kinds:
            if kind not in _KINDS:
                raise edge.invalid(f"filter.kinds: {kind} is not a record kind of credex.v1.Kind")
        for event_type in given.event_types:
            if event_type not in _EVENT_TYPES:
                raise edge.invalid(f"filter.event_types: {event_type} is not an event type of credex.v1.EventType")
        subjects = []
        for index, raw in enumerate(given.subjects):
            try:
                subjects.append(authorizations.subject_code(raw, self.pseudonymizer, f"filter.subjects[{index}]"))
            except authorizations.AuthorizationInvalid as exc:
                raise edge.invalid(str(exc)) from None
        measures = None
        if given.scenario:
            catalogue = Catalogue.shipped()
            try:
                code = catalogue.scenario(given.scenario).code
            except UnknownScenario as exc:
                raise edge.invalid(f"filter.scenario: {exc}") from None
            measures = tuple(catalogue.in_scenario(code))
        return Filter(
            origins=origins,
            kinds=frozenset(given.kinds),
            event_types=frozenset(given.event_types),
            subjects=tuple(sorted(set(subjects))),
            measures=measures,
        )

    def _cursor(self, name: str, given: Any) -> dict[str, int]:
        if len(given) > MAX_CURSOR:
            raise edge.invalid(f"{name} has {len(given)} positions; at most {MAX_CURSOR}, one per origin")
        positions: dict[str, int] = {}
        for index, position in enumerate(given):
            origin = self.member(position.origin)
            if origin in positions:
                raise edge.invalid(f"{name}[{index}] names {origin} a second time; send one position per origin")
            positions[origin] = position.seq
        return positions

    async def GrantAuthorization(
        self,
        request: subscription_pb2.GrantAuthorizationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_pb2.AuthorizationReceipt:
        call = _operator()
        if not request.HasField("authorization"):
            raise edge.invalid("authorization is required")
        ledger = self._ledger()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                granted = await recording.grant(
                    conn, ledger, request.authorization, call.caller.identity, self.pseudonymizer
                )
        except authorizations.AuthorizationInvalid as exc:
            raise edge.invalid(str(exc)) from None
        except SigningRefused as exc:
            raise edge.Refused(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        call.subject_id = granted.subject_id
        recorded = f"authorization {granted.authorization_id} to {granted.grantee} recorded as {granted.record_id}"
        call.answer(1, [recorded])
        return _receipt(granted)

    async def EndAuthorization(
        self,
        request: subscription_pb2.EndAuthorizationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_pb2.AuthorizationReceipt:
        call = _operator()
        ledger = self._ledger()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                ended = await recording.end(conn, ledger, request.grantee, request.authorization_id, request.reason)
        except authorizations.AuthorizationInvalid as exc:
            raise edge.invalid(str(exc)) from None
        except SigningRefused as exc:
            raise edge.Refused(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        if ended is None:
            raise edge.Refused(
                grpc.StatusCode.NOT_FOUND,
                "this node recorded no such authorization for that grantee; one recorded at another node is ended"
                " there, by its origin",
            )
        call.subject_id = ended.subject_id
        call.answer(1, [f"authorization {ended.authorization_id} to {ended.grantee} ended ({ended.record_id} revoked)"])
        return _receipt(ended)

    def _ledger(self) -> Ledger:
        if self.ledger is None:
            raise edge.Refused(grpc.StatusCode.UNAVAILABLE, "this node signs nothing: it serves without its ledger")
        return self.ledger


def edge_origin(name: str, value: str) -> str:
    edge.check_origin(name, value)
    return value


def _operator() -> edge.Call:
    call = edge.current()
    if call.caller.role not in _MAY_GRANT:
        raise edge.Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "only operators record or end authorizations (credex authorization grant|end)",
        )
    return call


def _receipt(granted: recording.Granted) -> subscription_pb2.AuthorizationReceipt:
    return subscription_pb2.AuthorizationReceipt(
        authorization_id=granted.authorization_id,
        grantee=granted.grantee,
        subject_id=granted.subject_id,
        active=granted.active,
        record_id=granted.record_id,
    )
