"""Subscription streams: events/s to one subscriber and to ten, beside raw Kafka consume of the same events.

    python -m bench.streams [--rows 20000]

A node takes in a file and publishes its log. Then, in the same run: bare aiokafka
consumes the node's topic from the start (the raw limit: the same events, no store,
no filter, no proofs), and SubscriptionService streams the whole log from seq 1 to
one subscriber, then to ten at once. The subscribers run in a separate process (as
a real subscriber would), so they do not share the node's interpreter; they count
messages without checking signatures, as the raw consumer does.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import federation, ingest_and_publish, line, result_of, run, services, start_node
from credex.adapters.samples import synth
from credex.node.channels import open_channel
from credex.v1 import subscription_pb2, subscription_pb2_grpc

ORIGIN = "310000"


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    """Messages/s of bare aiokafka reading ``n`` messages of ``topic`` from the earliest offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}])
        got = 0
        started = time.perf_counter()
        while got < n:
            batch = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batch:
                break
            got += sum(len(messages) for messages in batch.values())
        return got / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _subscribers(port: int, tls: tuple[Path, Path, Path], head: int, count: int, out: Any) -> None:
    """In a child process: ``count`` streams from seq 1 until each has reached ``head``; put the seconds taken."""

    async def one(stub: Any) -> int:  # an aio stub; its stubs type the sync one
        call = stub.Subscribe(subscription_pb2.SubscribeRequest(purpose="bench"))
        events = 0
        async for message in call:
            for item in message.items:
                body = item.WhichOneof("body")
                if body == "event":
                    events += 1
                    if item.event.seq >= head:
                        call.cancel()
                        return events
                elif body == "heartbeat" and any(p.seq >= head for p in item.heartbeat.cursor):
                    call.cancel()
                    return events
        return events

    async def measure() -> tuple[float, int]:
        ca, cert, key = tls
        channels = [open_channel(f"127.0.0.1:{port}", ca=ca, cert=cert, key=key) for _ in range(count)]
        stubs = [subscription_pb2_grpc.SubscriptionServiceStub(c) for c in channels]
        started = time.perf_counter()
        taken = await asyncio.gather(*(one(s) for s in stubs))
        seconds = time.perf_counter() - started
        for channel in channels:
            await channel.close(None)
        return seconds, sum(taken)

    out.put(asyncio.run(measure()))


async def stream_to(port: int, tls: tuple[Path, Path, Path], head: int, count: int) -> tuple[float, int]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=_subscribers, args=(port, tls, head, count, out))
    process.start()
    result: tuple[float, int] = await result_of(process, out)
    return result


async def main(rows: int) -> None:
    async with services() as running:
        sample = running.root / "penalties.csv"
        synth.write(sample, synth.SynthSpec(region=ORIGIN, rows=rows, bad_share=0.0))
        built = federation(running)
        node = await start_node(built, running, ORIGIN, subscriptions={"max_streams_per_caller": 16})
        report, _, _ = await ingest_and_publish(node, sample)
        head = report.new
        member_tls = built.layout.member_dir("320000") / "tls"
        tls = (built.layout.ca_dir / "ca.crt", member_tls / "node.crt", member_tls / "node.key")
        consuming = await raw_consume(running.broker.bootstrap_servers, f"credex.{ORIGIN}.events", head)
        one_seconds, one_events = await stream_to(node.port, tls, head, 1)
        ten_seconds, ten_events = await stream_to(node.port, tls, head, 10)
        await built.stop()
    print(f"streams: {head:,} events of one origin, each stream from seq 1 (raw consume in the same run)")
    line("stream to 1 subscriber", one_events / one_seconds, "ev/s", consuming, "raw consume")
    line("stream to 10 subscribers, all together", ten_events / ten_seconds, "ev/s", consuming, "raw consume")
    line("  per subscriber of the 10", ten_events / 10 / ten_seconds, "ev/s")
    line("raw consume of the same topic", consuming, "msg/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20000)
    run(main(parser.parse_args().rows))
