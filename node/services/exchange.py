"""ExchangeService: any node serves any origin's log it holds, for catch-up and repair.

Envelopes carry the origin's signature, so the caller verifies them exactly as
it verifies Kafka messages; which node relays them does not matter. The events
hold whole records of every sharing level, so only peers and operators may fetch
them, and every fetch is audited by the edge with the seqs it served, in stretches.
"""

from __future__ import annotations

import itertools
from typing import Any

import grpc

from credex.node.chain.wanted import stretches
from credex.node.services import edge
from credex.node.services.servicer import Servicer
from credex.v1 import event_pb2, exchange_pb2, exchange_pb2_grpc


class ExchangeService(Servicer, exchange_pb2_grpc.ExchangeServiceServicer):
    async def FetchEvents(
        self,
        request: exchange_pb2.FetchEventsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> exchange_pb2.FetchEventsResponse:
        call = edge.current()
        caller = call.caller
        if not caller.may_exchange:
            raise edge.Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.identity} ({caller.role}) may not fetch logs; only federation peers and operators may",
            )
        self.member(request.origin)
        seqs = _seqs(request)
        limit = min(request.limit, edge.MAX_FETCH)  # a longer stretch is cut; more seqs the edge refuses
        async with self.pool.acquire() as conn:
            head = await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", request.origin)
            if seqs:
                rows = await conn.fetch(
                    "SELECT seq, envelope FROM events WHERE origin = $1 AND seq = ANY($2::bigint[]) ORDER BY seq",
                    request.origin,
                    seqs,
                )
            elif limit:
                rows = await conn.fetch(
                    "SELECT seq, envelope FROM events WHERE origin = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    request.origin,
                    max(request.from_seq, 1),
                    limit,
                )
            else:
                rows = []
        response = exchange_pb2.FetchEventsResponse(origin=request.origin, head_seq=head or 0)
        for row in rows:
            response.envelopes.append(event_pb2.Envelope.FromString(row["envelope"]))
        served = [int(row["seq"]) for row in rows]
        if served:
            named = (f"{first}" if first == last else f"{first}..{last}" for first, last in stretches(served))
            call.answer(len(served), (f"{request.origin}#{run}" for run in named))
        else:
            call.answer(0, [f"{request.origin} head {head or 0}"])
        return response


def _seqs(request: exchange_pb2.FetchEventsRequest) -> list[int]:
    """The seqs asked for, if the request names them: strictly ascending, at least 1, with no stretch beside them."""
    seqs = list(request.seqs)
    if not seqs:
        return seqs
    if request.from_seq or request.limit:
        raise edge.invalid("ask for a stretch (from_seq, limit) or for seqs, not both")
    if seqs[0] < 1 or any(later <= earlier for earlier, later in itertools.pairwise(seqs)):
        raise edge.invalid("seqs must be strictly ascending seqs of the log (1 and up): sort them and drop repeats")
    return seqs
