"""QualityService: the data-quality report over gRPC, for dashboards (government and operators only)."""

from __future__ import annotations

import asyncpg
import grpc

from credex.crypto.trust import TrustBundle
from credex.node.access import identify
from credex.node.config import NodeConfig
from credex.node.quality import compute, to_message
from credex.v1 import quality_pb2, quality_pb2_grpc


class QualityService(quality_pb2_grpc.QualityServiceServicer):
    def __init__(self, config: NodeConfig, pool: asyncpg.Pool, bundle: TrustBundle) -> None:
        self.config = config
        self.pool = pool
        self.bundle = bundle

    async def GetQualityReport(
        self,
        request: quality_pb2.GetQualityReportRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> quality_pb2.QualityReport:
        caller = identify(context, self.config.access, self.bundle)
        if caller.role not in ("government", "operator"):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the quality report is for government and operators")
        deadline = self.config.quality.deadline_working_days
        units = await compute(self.pool, self.config.origin, deadline_days=deadline, unit=request.unit_uscc or None)
        return quality_pb2.QualityReport(
            origin=self.config.origin, deadline_working_days=deadline, units=[to_message(u) for u in units]
        )
