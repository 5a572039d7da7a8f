"""A direct Kafka subscriber of one credex origin, following docs/asyncapi.json.

It reads ``credex.<origin>.events`` from the earliest offset, applies each (origin, seq)
once (delivery is at least once), checks every envelope against the federation's trust
bundle (headers are routing hints only), and prints one line per event. A withheld
notice means the event exists but does not cross the bus: take it, signed and proved,
from SubscriptionService.Subscribe (``credex subscribe``).

    python examples/kafka_consumer.py --bootstrap 127.0.0.1:9092 --origin 310000 \\
        --bundle trust/bundle.json --federation-key trust/federation.pub
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from credex.crypto.keys import load_public
from credex.crypto.trust import EventRejected, EventVerifier, TrustBundle

WITHHELD = b"cn.credex.record.withheld.v1"


async def consume(bootstrap: str, origin: str, bundle: TrustBundle, limit: int) -> None:
    verifier = EventVerifier(bundle)
    taken: set[int] = set()  # seqs applied: a message seen again changes nothing
    consumer = AIOKafkaConsumer(
        f"credex.{origin}.events",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async for message in consumer:
            headers = dict(message.headers)
            seq = int(headers["ce_sequence"])
            if seq in taken:
                continue
            if headers.get("ce_type") == WITHHELD:
                print(f"{origin}:{seq} withheld: take it from SubscriptionService", flush=True)
            else:
                try:
                    event = verifier.verify_bytes(message.value or b"", origin).event
                except EventRejected as exc:
                    print(f"{origin}:{seq} REJECTED: {exc.message}", flush=True)
                    continue
                kind = headers["ce_type"].decode()
                print(f"{origin}:{event.seq} {kind} {event.record_id} {event.record.subject.uscc} verified", flush=True)
            taken.add(seq)
            if limit and len(taken) >= limit:
                return
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="print one origin's verified events from its Kafka topic")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--federation-key", type=Path, required=True)
    parser.add_argument("--max", type=int, default=0, help="stop after this many events (0: run until stopped)")
    args = parser.parse_args()
    bundle = TrustBundle.load_signed(args.bundle, load_public(args.federation_key))
    asyncio.run(consume(args.bootstrap, args.origin, bundle, args.max))


if __name__ == "__main__":
    main()
