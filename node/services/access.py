"""Who is calling, and what their role lets them see.

A caller is identified by the common name of its client certificate (issued
under the federation CA). A name that is a member's origin code is that member,
a peer, only if the certificate's key is the one the trust bundle binds to the
member (``tls_spki_sha256``): the CA may have issued other certificates with
that name, by mistake or to an attacker, and a name alone must not open
restricted records and every log. A member without a binding gets no peer
rights. Other identities get the role the config gives them (``access.callers``),
and where ``access.caller_keys`` binds a name to a key, only with that key: the
same rule as for members, so that a stray certificate named like the government
office does not read government-shared records. Without TLS there is no
identity, and the caller gets ``access.anonymous_role`` under its address: the IP
(an IPv6 caller its /64), never the source port, so that opening connection after
connection does not make a caller many callers to the edge's per-caller limit.

The bundle is the one in force at each call, so a member added or removed by a
refresh gains or loses peer rights at once.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import grpc

from credex.crypto.pseudonym import is_pseudonym
from credex.crypto.tls import CertificateError, spki_sha256
from credex.crypto.trust import Member, TrustBundle
from credex.domain import uscc as uscc_codes
from credex.domain.audience import kind_shown_to, regional
from credex.domain.jurisdiction import in_region
from credex.node.config import AccessConfig, Role
from credex.node.store.events import WITHDRAWN
from credex.v1 import lookup_pb2, record_pb2

log = logging.getLogger(__name__)

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
    # A financing platform sees public records; restricted ones only of subjects that authorized it,
    # which the stream decides per event (node/streams/access.py).
    "financing": frozenset({record_pb2.SHARING_LEVEL_PUBLIC}),
    # A supervision platform is a government body: what government callers see.
    "supervision": frozenset({record_pb2.SHARING_LEVEL_PUBLIC, record_pb2.SHARING_LEVEL_GOVERNMENT}),
    "operator": frozenset(
        {
            record_pb2.SHARING_LEVEL_PUBLIC,
            record_pb2.SHARING_LEVEL_GOVERNMENT,
            record_pb2.SHARING_LEVEL_RESTRICTED,
        }
    ),
}
_EXCHANGE_ROLES = frozenset({"peer", "operator"})
# Roles a config gives by name: worth binding to a key; the offices that check subjects and read quality reports.
_PRIVILEGED = frozenset({"government", "operator"})
_WARNED_MAX = 1024  # distinct refused certificates logged at WARNING; more go to DEBUG


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    role: Role
    # A supervision caller's region (access.regions), the division whose risk classes it sees: one
    # fact for lookups, proofs and streams. Empty for every other role, and for a supervisor that an
    # operator has not given one, which the edge refuses (:attr:`lacks_region`).
    region: str = ""

    @property
    def may_exchange(self) -> bool:
        return self.role in _EXCHANGE_ROLES

    @property
    def may_check(self) -> bool:
        """Government offices and operators check subjects (逢办必查) and read data-quality reports; no one else."""
        return self.role in _PRIVILEGED

    def sees(self, sharing_level: int, status: int, kind: int) -> bool:
        """Whether a record of ``kind`` at this sharing level and status is shown to the caller: the one rule.

        Every reader asks it (lookups, search, checks, streams, the log's leaves), so a kind kept
        from a role is kept from it everywhere. Public callers see only active records inside
        their window; only peers see withdrawn ones (revoked at the source, repaired, deleted
        after an objection, or hidden for now).
        """
        if not self.sees_kind(kind):
            return False
        return self.sees_level(sharing_level, status)

    def sees_record(self, origin: str, record: record_pb2.Record) -> bool:
        """The region half of what a supervisor sees, asked with :meth:`sees` of every record it is shown.

        What it sees for being a supervisor (a risk class) it sees of its region only
        (domain.jurisdiction.in_region); everything else as the government office it is.
        """
        if self.role != "supervision" or not regional(record.kind):
            return True
        return bool(self.region) and in_region(self.region, origin, record)

    def regional_kinds(self) -> list[int]:
        """The kinds :meth:`sees_record` judges record by record for this caller, for readers that count in SQL."""
        if self.role != "supervision":
            return []
        return [kind for kind in record_pb2.Kind.values() if regional(kind)]

    @property
    def lacks_region(self) -> bool:
        """A supervision caller no operator has given a region: it cannot be told which classes are its own."""
        return self.role == "supervision" and not self.region

    def sees_kind(self, kind: int) -> bool:
        """Risk classes only to supervision callers, grades never to public or financing ones (domain.audience)."""
        return kind_shown_to(kind, self.role)

    def hidden_kinds(self) -> list[int]:
        """The kinds kept from the caller, for readers that filter in SQL (a kind this version does not
        know is judged by its level alone, in SQL as in :meth:`sees`)."""
        return [kind for kind in record_pb2.Kind.values() if not self.sees_kind(kind)]

    def sees_level(self, sharing_level: int, status: int) -> bool:
        """The sharing-level and status half of :meth:`sees`, for what is judged by level alone (a report's levels)."""
        if sharing_level not in _LEVELS[self.role]:
            return False
        if self.role == "public":
            return status == lookup_pb2.ENTRY_STATUS_ACTIVE
        if status in WITHDRAWN:
            return self.role in _EXCHANGE_ROLES
        return True


class Callers:
    """Who presents a certificate, or calls from an address (:func:`caller_of`), remembered per bundle and config.

    Working a caller out (the certificate's key hashed, the bundle's members and the
    config's bindings looked up, an address parsed) costs as much as the rest of a short
    call. The answer depends only on the certificate presented (its name and key; the
    CA checked it in the handshake), or without one on the address, and on the trust
    bundle and access config in force; so it is kept by exactly those, and forgotten
    whole as soon as either is another object (a bundle refreshed, a member removed or
    rebound). Bounded: past :attr:`limit` distinct callers it starts again.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._known: dict[tuple[bytes | None, bytes | None, str], Caller] = {}
        self._under: tuple[AccessConfig, TrustBundle] | None = None

    def identify(self, context: grpc.aio.ServicerContext, access: AccessConfig, bundle: TrustBundle) -> Caller:  # type: ignore[type-arg]
        under = self._under
        if under is None or under[0] is not access or under[1] is not bundle:
            self._known.clear()
            self._under = (access, bundle)
        auth = context.auth_context()
        name = next(iter(auth.get("x509_common_name") or ()), None)
        certificate = next(iter(auth.get("x509_pem_cert") or ()), None)
        # With a certificate the address decides nothing; without one it is all there is (the connection's peer).
        key = (name, certificate, "" if name is not None else context.peer())
        caller = self._known.get(key)
        if caller is None:
            if len(self._known) >= self.limit:
                self._known.clear()
            address = peer_address(context.peer())
            shown = name.decode(errors="replace") if name is not None else None
            caller = self._known[key] = caller_of(shown, lambda: _presented_spki(auth), address, access, bundle)
        return caller


def caller_of(
    name: str | None, presented: Callable[[], str], address: str, access: AccessConfig, bundle: TrustBundle
) -> Caller:
    """Who a caller is, from its certificate's common name (None: no certificate) and key (SPKI SHA-256).

    One rule for every transport (gRPC, the tile server over HTTPS).
    """
    if name is not None:
        member = bundle.member(name)
        if member is not None:
            spki = presented()
            if not member.tls_spki_sha256 or spki != member.tls_spki_sha256:
                _refused_as_peer(member, spki)
                return Caller(f"{name} (certificate not bound to the member)", "public")
            return _with_region(Caller(name, access.callers.get(name, "peer")), access)
        role = access.callers.get(name)
        if role is None:
            return Caller(name, "public")
        bound = access.caller_keys.get(name)
        if bound is not None:
            spki = presented()
            if spki != bound:
                _refused_role(name, role, spki)
                return Caller(f"{name} (certificate not bound to the caller)", "public")
        return _with_region(Caller(name, role), access)
    return Caller(f"anonymous@{address}", access.anonymous_role)


def _with_region(caller: Caller, access: AccessConfig) -> Caller:
    """A supervision caller with the region access.regions gives it; any other caller as it is."""
    if caller.role != "supervision":
        return caller
    return Caller(caller.identity, caller.role, access.regions.get(caller.identity, ""))


def speaks_for(access: AccessConfig, caller: Caller) -> frozenset[str]:
    """The subjects ``caller`` speaks for (``access.speaks_for``): canonical USCCs and persons' pseudonyms.

    A company's desk speaks for its USCC; a natural person's own caller for the person's
    pseudonym, so that no config file holds an ID number. The config binds every such
    name to its certificate's key, but a caller that lost its role (a stray certificate
    with the name, served as public under another identity) never matches a name here.
    """
    return frozenset(
        code if is_pseudonym(code) else uscc_codes.validate(code).code
        for code in access.speaks_for.get(caller.identity, [])
    )


def peer_address(peer: str) -> str:
    """The caller's address without its source port: ``ipv4:10.1.2.3:50312`` is ``10.1.2.3``.

    An IPv6 caller is its /64, the block one host is normally given. Anything else
    (a Unix socket) is kept as gRPC names it.
    """
    scheme, _, rest = peer.partition(":")
    if scheme not in {"ipv4", "ipv6"}:
        return peer
    host = urllib.parse.unquote(rest.rpartition(":")[0]).strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return peer
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def unbound_privileged(access: AccessConfig) -> list[str]:
    """Government and operator callers that any CA-issued certificate with their name would be."""
    return sorted(
        name for name, role in access.callers.items() if role in _PRIVILEGED and name not in access.caller_keys
    )


def _presented_spki(auth: Mapping[str, Iterable[bytes]]) -> str:
    certificates = list(auth.get("x509_pem_cert") or [])
    return _spki_of(certificates[0]) if certificates else ""


@lru_cache(maxsize=256)  # bounded: certificates are few, and each passed the CA check before it got here
def _spki_of(cert_pem: bytes) -> str:
    try:
        return spki_sha256(cert_pem)
    except CertificateError:
        return ""


_warned: set[tuple[str, str]] = set()


def _refused_as_peer(member: Member, presented: str) -> None:
    """Say once per certificate why a caller named like a member is not treated as that member."""
    if not member.tls_spki_sha256:
        why = "the trust bundle binds no certificate to this member (credex trust add-member --tls-cert)"
    else:
        why = f"its certificate key (SPKI SHA-256 {presented[:16]}…) is not the one the trust bundle binds"
    _warn_once(member.origin, "peer", presented, why)


def _refused_role(name: str, role: Role, presented: str) -> None:
    why = f"its certificate key (SPKI SHA-256 {presented[:16]}…) is not the one access.caller_keys binds"
    _warn_once(name, role, presented, why)


def _warn_once(name: str, role: str, presented: str, why: str) -> None:
    """Log at WARNING once per (name, key), so that a caller retrying cannot flood the log."""
    seen = (name, presented)
    if seen in _warned or len(_warned) >= _WARNED_MAX:
        log.debug("caller named %s refused %s rights: %s", name, role, why)
        return
    _warned.add(seen)
    log.warning("caller named %s refused %s rights, served as public: %s", name, role, why)
