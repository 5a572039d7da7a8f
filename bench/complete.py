"""When a peer holds an origin's whole log, asked cheaply: the benchmark must not load what it measures.

``Node.status()`` runs a dozen queries, one counting every record; polled twenty
times a second it cost PostgreSQL seconds of CPU in a run of 20,000 events. This
asks the two things that tell completion, one indexed query.
"""

from __future__ import annotations

import asyncio

from credex.node.chain.checkpoints import AGREED
from credex.node.runtime import Node


async def holds_whole_log(peer: Node, origin: str, events: int, every: float = 0.05) -> None:
    """Until ``peer`` holds ``events`` of ``origin``'s log without a gap and agrees with a checkpoint of them."""
    assert peer.pool is not None
    while True:
        async with peer.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT contiguous_seq FROM origin_progress WHERE origin = $1),"
                " (SELECT max(size) FROM checkpoints WHERE origin = $1 AND state = ANY($2::text[]))",
                origin,
                list(AGREED),
            )
        assert row is not None
        held, agreed = row[0], row[1]
        if (held or 0) >= events and (agreed or 0) >= events:
            return
        await asyncio.sleep(every)
