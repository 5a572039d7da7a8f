"""ExchangeService: any node serves any origin's log it holds, for catch-up and repair.

Envelopes carry the origin's signature, so the caller verifies them exactly as
it verifies Kafka messages; which node relays them does not matter.
"""

from __future__ import annotations

import asyncpg
import grpc

from credex.crypto.trust import TrustBundle
from credex.node.access import identify
from credex.node.config import NodeConfig
from credex.v1 import event_pb2, exchange_pb2, exchange_pb2_grpc

MAX_FETCH = 5000


class ExchangeService(exchange_pb2_grpc.ExchangeServiceServicer):
    def __init__(self, config: NodeConfig, pool: asyncpg.Pool, bundle: TrustBundle) -> None:
        self.config = config
        self.pool = pool
        self.bundle = bundle

    async def FetchEvents(
        self,
        request: exchange_pb2.FetchEventsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> exchange_pb2.FetchEventsResponse:
        caller = identify(context, self.config.access, self.bundle)
        if not caller.may_exchange:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.identity} ({caller.role}) may not fetch logs; only federation peers and operators may",
            )
        if self.bundle.member(request.origin) is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"origin {request.origin!r} is not a member of the federation"
            )
        limit = min(request.limit, MAX_FETCH)
        from_seq = max(request.from_seq, 1)
        async with self.pool.acquire() as conn:
            head = await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", request.origin)
            rows = (
                await conn.fetch(
                    "SELECT envelope FROM events WHERE origin = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
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
        return response
