"""The gRPC services behind the edge: lookups, proofs, log exchange, quality reports, and the audit trail."""

from credex.node.services.audit_trail import AuditLog
from credex.node.services.client import get_profile
from credex.node.services.server import start_server

__all__ = ["AuditLog", "get_profile", "start_server"]
