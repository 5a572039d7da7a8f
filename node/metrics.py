"""Prometheus metrics of a node, labelled by the node's origin.

Several nodes can share one process (the demo, the tests), so every series
carries the origin of the node that counts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram


@dataclass(frozen=True)
class _Metrics:
    rows_in: Counter = field(
        default_factory=lambda: Counter(
            "credex_ingest_rows", "Rows taken in from platform files, by outcome", ["origin", "outcome"]
        )
    )
    events_signed: Counter = field(
        default_factory=lambda: Counter("credex_events_signed", "Events appended to this node's own log", ["origin"])
    )
    events_published: Counter = field(
        default_factory=lambda: Counter("credex_events_published", "Own events acknowledged by the broker", ["origin"])
    )
    events_withheld: Counter = field(
        default_factory=lambda: Counter(
            "credex_events_withheld",
            "Own events kept off the bus (not public, or about a natural person): a notice went instead",
            ["origin"],
        )
    )
    relay_errors: Counter = field(
        default_factory=lambda: Counter(
            "credex_relay_errors", "Relay failures (broker or database unavailable)", ["origin"]
        )
    )
    intake: Counter = field(
        default_factory=lambda: Counter(
            "credex_intake_events",
            "Peer events by outcome (applied, replay, rejected reasons)",
            ["origin", "peer", "outcome"],
        )
    )
    intake_errors: Counter = field(
        default_factory=lambda: Counter(
            "credex_intake_errors", "Intake loop failures (broker or database unavailable)", ["origin"]
        )
    )
    sync_fetched: Counter = field(
        default_factory=lambda: Counter(
            "credex_sync_events_fetched", "Events fetched over gRPC to close gaps", ["origin", "peer"]
        )
    )
    peer_contiguous: Gauge = field(
        default_factory=lambda: Gauge(
            "credex_origin_contiguous_seq", "Highest seq held without a gap, per origin", ["origin", "peer"]
        )
    )
    rpcs: Counter = field(
        default_factory=lambda: Counter(
            "credex_rpc_calls",
            "gRPC calls by method and the status answered (CANCELLED: the caller gave up or its deadline passed)",
            ["origin", "method", "status"],
        )
    )
    rpc_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "credex_rpc_seconds", "gRPC call latency of admitted calls", ["origin", "method"]
        )
    )
    rpc_in_flight: Gauge = field(
        default_factory=lambda: Gauge("credex_rpc_in_flight", "gRPC calls being served now", ["origin"])
    )
    audit_entries: Counter = field(
        default_factory=lambda: Counter(
            "credex_audit_entries",
            "Audit entries by outcome (written; failed: the call got UNAVAILABLE; dropped: queue full)",
            ["origin", "outcome"],
        )
    )

    records_expired: Counter = field(
        default_factory=lambda: Counter(
            "credex_records_expired", "Own records the daily job signed EXPIRE for (window ended)", ["origin"]
        )
    )
    checks_overdue: Gauge = field(
        default_factory=lambda: Gauge(
            "credex_check_feedback_overdue",
            "Checked subjects whose usage feedback (应用情况反馈) is overdue, as last counted",
            ["origin"],
        )
    )
    streams_open: Gauge = field(
        default_factory=lambda: Gauge("credex_streams_open", "Subscription streams being served now", ["origin"])
    )
    stream_buffered_bytes: Gauge = field(
        default_factory=lambda: Gauge(
            "credex_stream_buffered_bytes",
            "Event bytes the open subscription streams hold read from the store and not yet written",
            ["origin"],
        )
    )


METRICS = _Metrics()
