"""A running node: store, ledger, relay, intake, sync and gRPC services wired together.

``Node`` owns what it starts and stops it in reverse order; cancelling the task
that runs a node (Ctrl-C) stops everything, including the embedded services it
started. A failure inside :meth:`Node.start` stops whatever had been started
before it is raised: no embedded PostgreSQL, broker, gRPC server or audit
writer is left behind.

Its background tasks run under a :class:`~credex.node.supervision.Supervisor`:
restarted with a growing pause when they fail, and when one fails for good the
gRPC health service answers NOT_SERVING and :meth:`Node.serve_until` raises, so
``credex node run`` exits non-zero instead of serving with part of it dead.

What intake and the checkpoint keeper find missing of the peers' logs they put
in one :class:`~credex.node.chain.WantedRanges`, which sync takes from; the
three are wired here and know nothing of each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from credex.adapters.profile import MappingContext, Profile
from credex.crypto.keys import KeyFileError, SigningKey, SigningRefused, load_public, require_private_file
from credex.crypto.parallel import SignatureWorkers
from credex.crypto.pseudonym import Pseudonymizer
from credex.crypto.trust import EventVerifier, TrustBundle, TrustBundleError
from credex.domain.case_rules import CaseRules
from credex.node.authorizations.recording import adopt_unsigned
from credex.node.cancellation import pause
from credex.node.cases import CaseCourier, CaseDesk
from credex.node.chain import AGREED, Alarms, CheckpointKeeper, LogBook, WantedRanges
from credex.node.channels import PeerChannels
from credex.node.checks import watch_overdue
from credex.node.config import NodeConfig
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.feeds import FileReport, ingest_file, open_feed
from credex.node.intake import Intake
from credex.node.ledger import Ledger
from credex.node.ledger.expiry import run_daily
from credex.node.relay import Relay
from credex.node.services import AuditLog, start_server
from credex.node.services.tile_server import TileServer
from credex.node.store import database as store
from credex.node.store import evidence as rejections
from credex.node.store import partitions
from credex.node.store.database import RETRYABLE
from credex.node.store.events import backfill_subjects, own_head
from credex.node.store.tiles import tile_backlog
from credex.node.supervision import Supervisor, TaskFailed
from credex.node.sync import Sync
from credex.node.trust import TrustProvider
from credex.node.witness import CosignatureCollector

log = logging.getLogger(__name__)
TILE_BACKLOG_SECONDS = 300.0  # how often the tile backlog job looks for untiled events

BUNDLE_REFRESH_SECONDS = 10.0
STOP_TASKS_SECONDS = 30.0
EVIDENCE_RETENTION_SECONDS = 3600.0


@dataclass
class NodeStatus:
    origin: str
    files: int = 0
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    own_events: int = 0
    published: int = 0
    records_by_origin: dict[str, int] = field(default_factory=dict)
    contiguous_by_origin: dict[str, int] = field(default_factory=dict)
    intake_counters: dict[str, dict[str, int]] = field(default_factory=dict)
    checkpoints: dict[str, tuple[int, str]] = field(default_factory=dict)  # origin -> (size, root hex)
    open_alarms: list[str] = field(default_factory=list)
    signing_refused: str = ""  # why this node signs nothing (its key is revoked); empty while it signs


def load_bundle(config: NodeConfig) -> TrustBundle:
    return TrustBundle.load_signed(config.trust.bundle, load_public(config.trust.federation_public_key))


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.origin = config.origin
        self.key = SigningKey.load(config.keys.signing_key)
        self.trust = TrustProvider(load_bundle(config), config.trust.min_version, str(config.trust.bundle))
        member = self.bundle.member(self.origin)
        if member is None:
            raise TrustBundleError(f"origin {self.origin} is not a member of trust bundle {config.trust.bundle}")
        if self.key.key_id not in {k.key_id for k in member.keys}:
            raise TrustBundleError(
                f"the signing key {config.keys.signing_key} (key id {self.key.key_id}) is not listed for "
                f"{self.origin} in the trust bundle; add it with `credex trust add-member` and re-sign"
            )
        if config.keys.pseudonym_key:
            require_private_file(config.keys.pseudonym_key, "pseudonym key")
        if config.keys.witness_key:
            require_private_file(config.keys.witness_key, "witness key")
            SigningKey.load(config.keys.witness_key)  # unreadable: say so now, not at the first checkpoint
        if config.grpc.tls.key is not None:
            require_private_file(config.grpc.tls.key, "TLS key")  # it proves this member's identity to peers
        self.pseudonymizer = Pseudonymizer.load(config.keys.pseudonym_key) if config.keys.pseudonym_key else None
        # Ledger and checkpoint signer share this key: once the bundle in force revokes it, both refuse.
        self.key.guard = lambda key_id: self.bundle.signing_refusal(self.origin, key_id)
        self._say_what_the_bundle_means(self.bundle)
        self.trust.subscribe(self._say_what_the_bundle_means)
        self.verifier = EventVerifier(self.bundle)
        self.trust.subscribe(lambda bundle: setattr(self.verifier, "bundle", bundle))
        # Ed25519 of large batches (ingest signing, intake and sync verifying) in worker processes.
        self.signatures = SignatureWorkers()
        self.ledger = Ledger(self.origin, self.key, self.signatures)
        self.pool: asyncpg.Pool | None = None
        self.port = 0
        self._embedded_pg: EmbeddedPostgres | None = None
        self._embedded_broker: EmbeddedBroker | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None  # grpc_health's aio HealthServicer, while serving
        self.supervisor = Supervisor(self.origin, self._report_failure)
        self._audit: AuditLog | None = None
        self.tiles: TileServer | None = None  # every origin's log as tlog-tiles over HTTP, while serving
        self._channels: PeerChannels | None = None
        self.relay: Relay | None = None
        self.intake: Intake | None = None
        self.sync: Sync | None = None
        self.bootstrap_servers = config.bus.bootstrap_servers

    @property
    def bundle(self) -> TrustBundle:
        """The trust bundle in force now (see :class:`TrustProvider`)."""
        return self.trust.current

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, *, serve: bool = True, exchange: bool = True) -> None:
        """Open the store and start serving; ``exchange=False`` runs without Kafka and sync (ingest only).

        If any step fails, what the earlier steps started is stopped before the error is raised.
        """
        try:
            await self._start(serve=serve, exchange=exchange)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, *, serve: bool, exchange: bool) -> None:
        url = self.config.database.url
        if not url:
            self._embedded_pg = EmbeddedPostgres(self.config.data_dir / "postgres")
            await asyncio.to_thread(self._embedded_pg.start)
            url = self._embedded_pg.uri(f"credex_{self.origin}")
        self.pool = await store.open_pool(
            url,
            create=self.config.database.create_if_missing or self._embedded_pg is not None,
            min_size=self.config.database.pool_min,
            max_size=self.config.database.pool_max,
        )
        await self.trust.remember(self.pool, str(self.config.trust.bundle))
        async with self.pool.acquire() as conn:
            if filled := await backfill_subjects(conn):
                log.info("node %s: %d subjects held before search existed are now searchable", self.origin, filled)
            try:
                await adopt_unsigned(conn, self.ledger)
            except SigningRefused as exc:  # a revoked key signs nothing; the old grants wait for a new key
                log.warning("node %s: authorizations kept before 0025 stay unsigned: %s", self.origin, exc)
        if exchange and not self.bootstrap_servers:
            self._embedded_broker = EmbeddedBroker(self.config.data_dir / "broker", self.config.bus.embedded_port)
            self.bootstrap_servers = await asyncio.to_thread(self._embedded_broker.start)
        tls = self.config.grpc.tls
        self._channels = PeerChannels(tls.client_ca, tls.cert, tls.key)
        self.logbook = LogBook(self.pool)
        self.alarms = Alarms(self.pool, self.origin)
        await self.alarms.load()
        self.wanted = WantedRanges()  # intake and the keeper put in, sync takes out
        self.keeper = CheckpointKeeper(
            self.origin,
            self.pool,
            self.trust,
            self.key,
            self.logbook,
            self.alarms,
            evidence=self.config.intake,
            wanted=self.wanted,
        )
        rules = CaseRules.load(self.config.cases.rules)  # an operator's broken file stops the start, named
        self.cases = CaseDesk(self.origin, self.pool, self.ledger, self.trust, rules)
        if serve:
            self._audit = AuditLog(self.pool, origin=self.origin)
            self._audit.start()
            self._server, self._health, self.port = await start_server(
                self.config, self.pool, self.trust, self._audit, self.logbook, self.keeper, self.cases, self.ledger
            )
            pool, checks_config = self.pool, self.config.checks
            retention = partitions.Retention(self.config.audit.retention_days, checks_config.retention_days)
            every = self.config.audit.partitions_every_seconds
            self.supervisor.spawn("partitions", lambda: partitions.keep_partitions(pool, retention, every))
            self.supervisor.spawn(
                "checks-overdue",
                lambda: watch_overdue(
                    pool, self.origin, checks_config.feedback_due_working_days, checks_config.overdue_every_seconds
                ),
            )
            if self.config.tiles_listen:
                self.tiles = TileServer(self.config, self.pool, self.keeper, self._audit, self.trust)
                await self.tiles.start()
        pool, latest = self.pool, self.logbook.latest
        self.supervisor.spawn("tile-backlog", lambda: _tile_backlog(pool))
        self.supervisor.spawn("latest-checkpoints", lambda: latest.listen(pool))  # news of checkpoints
        if exchange:
            self.relay = Relay(self.config, self.pool, self.bootstrap_servers)
            self.intake = Intake(
                self.config,
                self.pool,
                self.verifier,
                self.alarms,
                self.keeper,
                self.trust,
                self.wanted,
                self.signatures,
            )
            self.sync = Sync(
                self.config, self.pool, self.trust, self.intake, self._channels, self.keeper, self.alarms, self.wanted
            )
            relay, intake, sync, keeper = self.relay, self.intake, self.sync, self.keeper
            checkpoint = self.config.checkpoint
            spawn = self.supervisor.spawn
            spawn("relay", relay.run)
            spawn("intake", lambda: intake.consume(self.bootstrap_servers))  # topics follow self.trust
            spawn("sync", sync.run)
            spawn("checkpoint-signer", lambda: keeper.run_signer(checkpoint.every_events, checkpoint.every_seconds))
            collector = CosignatureCollector(self.origin, self.pool, self.trust, self.logbook, self._channels)
            spawn("cosignature-collector", lambda: collector.run(checkpoint.every_seconds))
            spawn("bundle-refresh", self._refresh_bundle)
            spawn("evidence-retention", self._expire_evidence)
            if self.config.expiry.enabled:
                pool, ledger, expiry = self.pool, self.ledger, self.config.expiry
                spawn("expiry", lambda: run_daily(pool, ledger, expiry))
            spawn("case-courier", CaseCourier(self.cases, self._channels, self.alarms).run)
        for feed_config in self.config.feeds if exchange else []:
            feed = open_feed(feed_config, self.pool, self.ledger, self.mapping_context(), self.config.ingest)
            self.supervisor.spawn(f"feed:{feed.name}", feed.run)
        log.info(
            "node %s started (gRPC port %s, broker %s)",
            self.origin,
            self.port or "-",
            self.bootstrap_servers or "-",
        )

    async def _report_failure(self, failure: TaskFailed) -> None:
        """A background task failed for good: health answers NOT_SERVING for every service from now on."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()  # every service NOT_SERVING, and it stays so

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; raise :class:`TaskFailed` if a background task fails for good first."""
        stopping = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(self.supervisor.failed())
        try:
            await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            failing.cancel()
        if self.supervisor.failure is not None:
            raise self.supervisor.failure

    async def stop(self) -> None:
        """Stop everything this node started, in reverse order; safe after a start that failed half-way."""
        await self.supervisor.stop(STOP_TASKS_SECONDS)
        await self._bounded("the signature workers", self.signatures.close())
        if self._server is not None:
            await self._bounded("the gRPC server", self._server.stop(grace=1.0))
            self._server = None
            self._health = None
        if self.tiles is not None:
            await self._bounded("the tile server", self.tiles.stop())
            self.tiles = None
        if self._audit is not None:
            await self._bounded("the audit writer", self._audit.stop())
            self._audit = None
        if self._channels is not None:
            await self._bounded("the peer channels", self._channels.close())
            self._channels = None
        if self.pool is not None:
            # close() waits for every connection to come back; one held by a task left behind would hang it.
            if not await self._bounded("the database pool", self.pool.close()):
                self.pool.terminate()
            self.pool = None
        if self._embedded_broker is not None:
            await asyncio.to_thread(self._embedded_broker.stop)
            self._embedded_broker = None
            self.bootstrap_servers = self.config.bus.bootstrap_servers
        if self._embedded_pg is not None:
            await asyncio.to_thread(self._embedded_pg.stop)
            self._embedded_pg = None
        log.info("node %s stopped", self.origin)

    async def _bounded(self, what: str, step: Awaitable[object]) -> bool:
        """Run one step of stopping; after STOP_TASKS_SECONDS say which step hangs and go on (False)."""
        try:
            async with asyncio.timeout(STOP_TASKS_SECONDS):
                await step
        except TimeoutError:
            log.error(
                "node %s: stopping %s took over %.0f s; going on without it", self.origin, what, STOP_TASKS_SECONDS
            )
            return False
        return True

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _refresh_bundle(self) -> None:
        """Pick up a newer signed bundle (members, keys, revocations) without a restart.

        Survives whatever goes wrong in one look: a refresh task that died would leave
        the node on its bundle for good, revocations and all, without a word.
        """
        # Compared by content, not mtime: a file replaced twice within the mtime's resolution, or
        # just before this task first ran, is still noticed.
        seen = b""
        while True:
            await pause(BUNDLE_REFRESH_SECONDS)
            try:
                seen = await self._refresh_once(seen)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trust bundle refresh failed, keeping version %d; trying again", self.bundle.version)
                seen = b""

    async def _refresh_once(self, seen: bytes) -> bytes:
        """Take the bundle file if it is new and newer; return its content, or ``b""`` to look again."""
        path = self.config.trust.bundle
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("cannot read trust bundle %s, keeping version %d: %s", path, self.bundle.version, exc)
            return b""
        if data == seen:
            return seen
        try:
            federation_public = load_public(self.config.trust.federation_public_key)
            bundle = TrustBundle.verify_signed(data, federation_public, source=str(path))
        except (TrustBundleError, KeyFileError) as exc:
            log.error("new trust bundle rejected, keeping version %d: %s", self.bundle.version, exc)
            return data
        if bundle.digest == self.bundle.digest or self.pool is None:
            return data  # the bundle in force
        try:
            await self.trust.adopt(bundle, self.pool, str(path))
        except TrustBundleError as exc:
            log.warning("trust bundle at %s ignored, keeping version %d: %s", path, self.bundle.version, exc)
        except RETRYABLE as exc:
            # Not switched before the database has it: otherwise a rollback could not be noticed.
            log.warning(
                "trust bundle version %d not yet taken, the database is unavailable (%s); trying again",
                bundle.version,
                exc,
            )
            return b""
        return data

    async def _expire_evidence(self) -> None:
        """Delete rejection evidence past ``intake.evidence_max_age_days``, at start and then hourly."""
        while True:
            try:
                if self.pool is not None:
                    await rejections.expire(self.pool, self.config.intake)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("evidence retention: %s; trying again in an hour", exc)
            await pause(EVIDENCE_RETENTION_SECONDS)

    def _say_what_the_bundle_means(self, bundle: TrustBundle) -> None:
        """Log, at start and on each refresh, what in the bundle limits this node or its peers."""
        refusal = bundle.signing_refusal(self.origin, self.key.key_id)
        if refusal:
            log.error("node %s: %s", self.origin, refusal)
        tls = self.config.grpc.tls
        if len(bundle.members) > 1 and (tls.cert is None or tls.key is None):
            log.warning(
                "node %s: the federation has %d members but grpc.tls.cert/key are not set: peers see this node"
                " as a public caller and refuse it their non-public events (FetchEvents answers"
                " PERMISSION_DENIED), so restricted and government-shared records do not replicate. Give it its"
                " node certificate (grpc.tls) and have it bound in the bundle (`credex trust add-member --tls-cert`)",
                self.origin,
                len(bundle.members),
            )
        if self.config.grpc.tls.cert is not None:
            for origin in bundle.unbound_members():
                log.warning(
                    "member %s has no TLS certificate bound in trust bundle version %d: its calls get no peer"
                    " rights until the federation operator adds one (`credex trust add-member --tls-cert`)",
                    origin,
                    bundle.version,
                )
        if witnessed := bundle.logs_witnessed_by(self.origin):
            listed, key = bundle.member(self.origin), self.config.keys.witness_key
            if key is None or listed is None or listed.witness_key != SigningKey.load(key).public_b64:
                log.error(
                    "node %s: trust bundle version %d has it witness %s, but keys.witness_key is %s: it cosigns"
                    " nothing and their checkpoints may lack the cosignatures their policy needs",
                    self.origin,
                    bundle.version,
                    ", ".join(witnessed),
                    "not set" if key is None else "not the witness key the bundle lists for it",
                )

    # -- operations -----------------------------------------------------------------

    def mapping_context(self) -> MappingContext:
        return MappingContext(origin=self.origin, publicity=self.config.publicity, pseudonymizer=self.pseudonymizer)

    async def ingest(self, paths: Sequence[Path], profile: Profile, progress: Any = None) -> list[FileReport]:
        assert self.pool is not None, "node is not started"
        return [
            await ingest_file(
                self.pool,
                self.ledger,
                profile,
                self.mapping_context(),
                path,
                batch_size=self.config.ingest.batch_size,
                parallel_from_bytes=self.config.ingest.parallel_from_bytes,
                progress=progress,
            )
            for path in paths
        ]

    async def status(self) -> NodeStatus:
        assert self.pool is not None, "node is not started"
        result = NodeStatus(self.origin, signing_refused=self.key.refusal())
        async with self.pool.acquire() as conn:
            files = await conn.fetchrow(
                "SELECT count(*) AS files, coalesce(sum(rows_in), 0) AS rows_in,"
                " coalesce(sum(accepted), 0) AS accepted, coalesce(sum(quarantined), 0) AS quarantined"
                " FROM ingest_files"
            )
            assert files is not None
            result.files, result.rows_in = files["files"], files["rows_in"]
            result.accepted, result.quarantined = files["accepted"], files["quarantined"]
            result.own_events = await own_head(conn, self.origin)
            result.published = await conn.fetchval(
                "SELECT coalesce(max(published_seq), 0) FROM relay_outbox WHERE origin = $1", self.origin
            )
            for row in await conn.fetch("SELECT origin, count(*) AS n FROM records GROUP BY origin ORDER BY origin"):
                result.records_by_origin[row["origin"]] = row["n"]
            for row in await conn.fetch("SELECT origin, contiguous_seq FROM origin_progress"):
                result.contiguous_by_origin[row["origin"]] = row["contiguous_seq"]
            for row in await conn.fetch("SELECT origin, outcome, n FROM intake_counters"):
                result.intake_counters.setdefault(row["origin"], {})[row["outcome"]] = row["n"]
            for row in await conn.fetch(
                "SELECT DISTINCT ON (origin) origin, size, root FROM checkpoints"
                " WHERE state = ANY($1::text[]) ORDER BY origin, size DESC",
                list(AGREED),
            ):
                result.checkpoints[row["origin"]] = (row["size"], bytes(row["root"]).hex())
            for row in await conn.fetch("SELECT id, origin, kind FROM alarms WHERE cleared_at IS NULL ORDER BY id"):
                result.open_alarms.append(f"#{row['id']} {row['kind']} on {row['origin']}")
        return result


async def _tile_backlog(pool: asyncpg.Pool) -> None:
    """Tile the events a store held before tiles existed, then look again now and then (it runs until stop)."""
    while True:
        if tiled := await tile_backlog(pool):
            log.info("tiled %d leaves held before the log had tiles", tiled)
        await pause(TILE_BACKLOG_SECONDS)
