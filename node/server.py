"""The node's gRPC server: lookup and exchange services, standard health checking and reflection."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from credex.crypto.trust import TrustBundle
from credex.node.audit import AuditLog
from credex.node.checkpoints import CheckpointKeeper
from credex.node.config import NodeConfig
from credex.node.exchange import ExchangeService
from credex.node.logbook import LogBook
from credex.node.logservice import LogService
from credex.node.lookup import LookupService
from credex.node.qualityservice import QualityService
from credex.v1 import (
    exchange_pb2,
    exchange_pb2_grpc,
    log_pb2,
    log_pb2_grpc,
    lookup_pb2,
    lookup_pb2_grpc,
    quality_pb2,
    quality_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    lookup_pb2.DESCRIPTOR.services_by_name["LookupService"].full_name,
    exchange_pb2.DESCRIPTOR.services_by_name["ExchangeService"].full_name,
    log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
    quality_pb2.DESCRIPTOR.services_by_name["QualityService"].full_name,
)
MAX_MESSAGE = 64 * 1024 * 1024


class ServerError(RuntimeError):
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
    bundle: TrustBundle,
    audit: AuditLog,
    logbook: LogBook,
    keeper: CheckpointKeeper,
) -> tuple[grpc.aio.Server, Any, int]:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    lookup_pb2_grpc.add_LookupServiceServicer_to_server(
        LookupService(config, pool, bundle, audit, logbook, keeper), server
    )
    exchange_pb2_grpc.add_ExchangeServiceServicer_to_server(ExchangeService(config, pool, bundle), server)
    log_pb2_grpc.add_LogServiceServicer_to_server(LogService(config, pool, bundle, logbook, keeper), server)
    quality_pb2_grpc.add_QualityServiceServicer_to_server(QualityService(config, pool, bundle), server)
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
