"""Who is calling, and what their role lets them see.

A caller is identified by the common name of its client certificate (issued
under the federation CA). Members of the trust bundle are peers by their origin
code; other identities get the role the config gives them. Without TLS there is
no identity, and the caller gets ``access.anonymous_role``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc

from credex.crypto.trust import TrustBundle
from credex.node.config import AccessConfig, Role
from credex.v1 import lookup_pb2, record_pb2

_LEVELS: dict[str, frozenset[int]] = {
    "public": frozenset({record_pb2.SHARING_LEVEL_PUBLIC}),
    "government": frozenset({record_pb2.SHARING_LEVEL_PUBLIC, record_pb2.SHARING_LEVEL_GOVERNMENT}),
    "peer": frozenset(
        {
            record_pb2.SHARING_LEVEL_PUBLIC,
            record_pb2.SHARING_LEVEL_GOVERNMENT,
            record_pb2.SHARING_LEVEL_RESTRICTED,
        }
    ),
    "operator": frozenset(
        {
            record_pb2.SHARING_LEVEL_PUBLIC,
            record_pb2.SHARING_LEVEL_GOVERNMENT,
            record_pb2.SHARING_LEVEL_RESTRICTED,
        }
    ),
}
_EXCHANGE_ROLES = frozenset({"peer", "operator"})


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    role: Role

    @property
    def may_exchange(self) -> bool:
        return self.role in _EXCHANGE_ROLES

    def sees(self, sharing_level: int, status: int) -> bool:
        """Public callers see only active records inside their window; nobody but peers sees revoked ones."""
        if sharing_level not in _LEVELS[self.role]:
            return False
        if self.role == "public":
            return status == lookup_pb2.ENTRY_STATUS_ACTIVE
        if status == lookup_pb2.ENTRY_STATUS_REVOKED:
            return self.role in _EXCHANGE_ROLES
        return True


def identify(context: grpc.aio.ServicerContext, access: AccessConfig, bundle: TrustBundle) -> Caller:  # type: ignore[type-arg]
    auth = context.auth_context()
    names = list(auth.get("x509_common_name") or [])
    if names:
        name = names[0].decode(errors="replace")
        if name in access.callers:
            return Caller(name, access.callers[name])
        if bundle.member(name) is not None:
            return Caller(name, "peer")
        return Caller(name, "public")
    return Caller(f"anonymous@{context.peer()}", access.anonymous_role)


def entry_status(status: int, publicity_end: dt.date | None, today: dt.date) -> int:
    if status == lookup_pb2.ENTRY_STATUS_ACTIVE and publicity_end is not None and publicity_end < today:
        return lookup_pb2.ENTRY_STATUS_EXPIRED
    return status
