"""What each caller role may see: sharing levels, publicity windows, revocations."""

from __future__ import annotations

import datetime as dt

import pytest

from credex.node.access import Caller, entry_status
from credex.v1 import lookup_pb2, record_pb2

ACTIVE, EXPIRED, REVOKED = (
    lookup_pb2.ENTRY_STATUS_ACTIVE,
    lookup_pb2.ENTRY_STATUS_EXPIRED,
    lookup_pb2.ENTRY_STATUS_REVOKED,
)
PUBLIC, GOVERNMENT, RESTRICTED = (
    record_pb2.SHARING_LEVEL_PUBLIC,
    record_pb2.SHARING_LEVEL_GOVERNMENT,
    record_pb2.SHARING_LEVEL_RESTRICTED,
)


def test_a_record_past_its_window_is_expired() -> None:
    today = dt.date(2026, 11, 21)
    assert entry_status(ACTIVE, dt.date(2026, 11, 20), today) == EXPIRED
    assert entry_status(ACTIVE, dt.date(2026, 11, 21), today) == ACTIVE
    assert entry_status(ACTIVE, None, today) == ACTIVE
    assert entry_status(REVOKED, dt.date(2020, 1, 1), today) == REVOKED


@pytest.mark.parametrize(
    ("role", "level", "status", "sees"),
    [
        ("public", PUBLIC, ACTIVE, True),
        ("public", PUBLIC, EXPIRED, False),
        ("public", PUBLIC, REVOKED, False),
        ("public", GOVERNMENT, ACTIVE, False),
        ("government", GOVERNMENT, ACTIVE, True),
        ("government", PUBLIC, EXPIRED, True),
        ("government", PUBLIC, REVOKED, False),
        ("government", RESTRICTED, ACTIVE, False),
        ("peer", RESTRICTED, ACTIVE, True),
        ("peer", PUBLIC, REVOKED, True),
    ],
)
def test_each_role_sees_only_what_it_may(role: str, level: int, status: int, sees: bool) -> None:
    assert Caller("someone", role).sees(level, status) is sees  # type: ignore[arg-type]


def test_only_peers_and_operators_may_fetch_logs() -> None:
    assert [Caller("x", r).may_exchange for r in ("public", "government", "peer", "operator")] == [
        False,
        False,
        True,
        True,
    ]
