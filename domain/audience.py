"""Which roles a record kind may be shown to, whatever its sharing level: the kinds kept from some roles.

Sharing levels (社会公开 / 政务共享 / 授权查询) say who may see a record; a few kinds are kept
from roles that see their level, by what they are (credit-use.md, Check rule 9):

- market-supervision risk classes (企业信用风险分类) reach supervision platforms only, and the
  federation's peers and operators, who hold every log whole; never public views or reports;
- evaluation grades are never shown to public callers, nor to financing platforms, which see
  what the public sees of a subject that authorized them;
- what supervision sees beyond a government office (risk classes) it sees of its own region
  only (:func:`regional`, the region by credex.domain.jurisdiction.in_region);
- authorization records (授权) are permissions, not credit facts: only peers and operators see
  them, so a financing platform never learns which other platforms a subject authorized.

Kept in the domain, below every reader, so the services (node/services/access.py, which
combines it with levels and standing) and the relay (what may cross the bus in clear, where
anyone on the host reads as the public) ask the same table.
"""

from __future__ import annotations

from credex.v1 import record_pb2

PUBLIC_ROLE = "public"
_KIND_AUDIENCE: dict[int, frozenset[str]] = {
    record_pb2.KIND_RISK_CLASS: frozenset({"supervision", "peer", "operator"}),
    record_pb2.KIND_EVALUATION: frozenset({"government", "supervision", "peer", "operator"}),
    record_pb2.KIND_AUTHORIZATION: frozenset({"peer", "operator"}),
}


def kind_shown_to(kind: int, role: str) -> bool:
    """Whether records of ``kind`` may be shown to a caller of ``role`` at all (its level decides the rest)."""
    audience = _KIND_AUDIENCE.get(kind)
    return audience is None or role in audience


def regional(kind: int) -> bool:
    """Whether ``kind`` is shown to a supervision caller for its region only: what no government office sees.

    A supervisor is a government body for everything else; what it sees for being a supervisor
    (a risk class) is its region's business, not another city's.
    """
    return kind_shown_to(kind, "supervision") and not kind_shown_to(kind, "government")
