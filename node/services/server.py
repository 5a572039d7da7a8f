"""The node's gRPC server: the credex services behind the edge (node/edge.py), standard health and reflection."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from credex.errors import CredexError
from credex.node.cases import CaseDesk
from credex.node.chain import CheckpointKeeper, LogBook
from credex.node.config import NodeConfig
from credex.node.ledger import Ledger
from credex.node.services.access import unbound_privileged
from credex.node.services.audit_trail import AuditLog
from credex.node.services.case_service import CaseService
from credex.node.services.check_service import CheckService
from credex.node.services.edge import Gate
from credex.node.services.exchange import ExchangeService
from credex.node.services.log_service import LogService
from credex.node.services.lookup import LookupService
from credex.node.services.quality_service import QualityService
from credex.node.services.report_service import ReportService
from credex.node.services.servicer import Servicer
from credex.node.services.standing_service import StandingService
from credex.node.services.subscription_service import SubscriptionService
from credex.node.services.witness_service import WitnessService
from credex.node.trust import TrustProvider
from credex.v1 import (
    case_pb2,
    check_pb2,
    exchange_pb2,
    log_pb2,
    lookup_pb2,
    quality_pb2,
    report_pb2,
    standing_pb2,
    subscription_pb2,
    witness_pb2,
)

log = logging.getLogger(__name__)

# Every credex service. Each is served through the edge, and tests/test_rpc_fuzz.py fuzzes every method.
SERVICES = {
    "LookupService": lookup_pb2.DESCRIPTOR.services_by_name["LookupService"],
    "ExchangeService": exchange_pb2.DESCRIPTOR.services_by_name["ExchangeService"],
    "LogService": log_pb2.DESCRIPTOR.services_by_name["LogService"],
    "QualityService": quality_pb2.DESCRIPTOR.services_by_name["QualityService"],
    "CheckService": check_pb2.DESCRIPTOR.services_by_name["CheckService"],
    "WitnessService": witness_pb2.DESCRIPTOR.services_by_name["WitnessService"],
    "ReportService": report_pb2.DESCRIPTOR.services_by_name["ReportService"],
    "CaseService": case_pb2.DESCRIPTOR.services_by_name["CaseService"],
    "SubscriptionService": subscription_pb2.DESCRIPTOR.services_by_name["SubscriptionService"],
    "StandingService": standing_pb2.DESCRIPTOR.services_by_name["StandingService"],
}
SERVICE_NAMES = tuple(d.full_name for d in SERVICES.values())
MAX_MESSAGE = 64 * 1024 * 1024
MAX_PENDING = 50_000


class ServerError(CredexError, RuntimeError):
    """The gRPC server could not listen where configured."""


def server_credentials(config: NodeConfig) -> grpc.ServerCredentials | None:
    tls = config.grpc.tls
    if tls.cert is None or tls.key is None:
        return None
    client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def start_server(
    config: NodeConfig,
    pool: asyncpg.Pool,
    trust: TrustProvider,
    audit: AuditLog,
    logbook: LogBook,
    keeper: CheckpointKeeper,
    cases: CaseDesk,
    ledger: Ledger,
) -> tuple[grpc.aio.Server, Any, int]:
    server = grpc.aio.server(
        options=[
            # Bigger than any credex request, so that an oversized one reaches the edge and gets
            # INVALID_ARGUMENT with a reason instead of a transport error.
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
            # gRPC core cancels calls silently (the caller sees a bare CANCELLED) when more than
            # 1,000 wait to be picked up by the server; the edge's admission limits refuse
            # with a reason instead, so core must not cut in first.
            ("grpc.server.max_pending_requests", MAX_PENDING),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING),
        ]
    )
    gate = Gate(config, trust, audit)
    audit.retain(config.audit.retention_days, config.audit.trim_every_seconds)
    for name in unbound_privileged(config.access):
        log.warning(
            "caller %s is given role %s by its certificate's name alone: any certificate the CA issues with that"
            " name gets the role; bind it to its key with access.caller_keys",
            name,
            config.access.callers[name],
        )
    services: list[tuple[str, type[Servicer]]] = [
        ("LookupService", LookupService),
        ("ExchangeService", ExchangeService),
        ("LogService", LogService),
        ("QualityService", QualityService),
        ("CheckService", CheckService),
        ("WitnessService", WitnessService),
        ("ReportService", ReportService),
        ("CaseService", CaseService),
        ("SubscriptionService", SubscriptionService),
        ("StandingService", StandingService),
    ]
    for name, service in services:
        descriptor = SERVICES[name]
        servicer = service(config, pool, trust, logbook, keeper)
        if isinstance(servicer, CaseService):
            servicer.desk = cases
        if isinstance(servicer, StandingService | SubscriptionService):
            servicer.ledger = ledger
        handlers = gate.method_handlers(servicer, descriptor)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # aio is set at import
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    credentials = server_credentials(config)
    try:
        if credentials is None:
            port = server.add_insecure_port(config.grpc.listen)
        else:
            port = server.add_secure_port(config.grpc.listen, credentials)
    except RuntimeError as exc:
        raise ServerError(f"cannot listen on {config.grpc.listen}: {exc}") from exc
    if port == 0:
        raise ServerError(f"cannot listen on {config.grpc.listen} (address in use?)")
    await server.start()
    for name in (*SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC %s on port %d", "with TLS" if credentials else "without TLS (loopback only)", port)
    return server, health_servicer, port
