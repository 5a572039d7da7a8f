"""ExchangeService: any node serves any origin's log it holds, for catch-up and repair.

Envelopes carry the origin's signature, so the caller verifies them exactly as
it verifies Kafka messages; which node relays them does not matter. The events
hold whole records of every sharing level, so only peers and operators may fetch
them, and every fetch is audited by the edge with the seq range it served.
"""

from __future__ import annotations

from typing import Any

import grpc

from credex.node.services import edge
from credex.node.services.servicer import Servicer
from credex.v1 import event_pb2, exchange_pb2, exchange_pb2_grpc

MAX_FETCH = 5000


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
        limit = min(request.limit, MAX_FETCH)
        from_seq = max(request.from_seq, 1)
        async with self.pool.acquire() as conn:
            head = await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", request.origin)
            rows = (
                await conn.fetch(
                    "SELECT seq, envelope FROM events WHERE origin = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    request.origin,
                    from_seq,
                    limit,
                )
                if limit
                else []
            )
        response = exchange_pb2.FetchEventsResponse(origin=request.origin, head_seq=head or 0)
        for row in rows:
            response.envelopes.append(event_pb2.Envelope.FromString(row["envelope"]))
        if rows:
            call.answer(len(rows), [f"{request.origin}#{rows[0]['seq']}..{rows[-1]['seq']}"])
        else:
            call.answer(0, [f"{request.origin} head {head or 0}"])
        return response
