"""QualityService: the data-quality report over gRPC, for dashboards (government and operators only)."""

from __future__ import annotations

from typing import Any

import grpc

from credex.node.quality import compute, to_message
from credex.node.services import edge
from credex.node.services.servicer import Servicer
from credex.v1 import quality_pb2, quality_pb2_grpc


class QualityService(Servicer, quality_pb2_grpc.QualityServiceServicer):
    async def GetQualityReport(
        self,
        request: quality_pb2.GetQualityReportRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> quality_pb2.QualityReport:
        call = edge.current()
        if not call.caller.may_check:
            raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, "the quality report is for government and operators")
        deadline = self.config.quality.deadline_working_days
        units = await compute(self.pool, self.config.origin, deadline_days=deadline, unit=request.unit_uscc or None)
        call.answer(len(units), (u.unit_uscc for u in units))
        return quality_pb2.QualityReport(
            origin=self.config.origin, deadline_working_days=deadline, units=[to_message(u) for u in units]
        )
