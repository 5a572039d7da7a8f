"""Rights belong to a certificate's key, not to any certificate with the right name.

A member's peer rights go to the certificate the trust bundle binds to it; a
configured caller's role (government, operator) to the key ``access.caller_keys``
binds to it. Regression test of the security review of issue 7's fix: callers
named in ``access.callers`` got their role by the certificate's name alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from credex.crypto.tls import CertificateAuthority, spki_sha256
from credex.node.config import AccessConfig
from credex.v1 import record_pb2

from .conftest import TestFederation
from .trust_support import RESTRICTED_USCC, add_restricted_record, fetch_code, issue, member_tls, profile_levels

RESTRICTED = record_pb2.SHARING_LEVEL_RESTRICTED


def test_two_certificates_for_one_name_have_different_bindings() -> None:
    ca = CertificateAuthority.create("test CA")
    first, second = ca.issue("330000", []), ca.issue("330000", [])
    assert spki_sha256(first.cert_pem) != spki_sha256(second.cert_pem)
    assert spki_sha256(first.cert_pem) == spki_sha256(first.cert_pem)
    assert len(spki_sha256(first.cert_pem)) == 64


async def test_a_certificate_with_a_members_name_but_another_key_gets_no_peer_rights(
    federation: TestFederation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = await federation.start_node("310000")
    await add_restricted_record(node)
    genuine = member_tls(federation, "330000")  # 330000 is a member whose node is not running
    impostors = {name: issue(federation, name, tmp_path / "impostor") for name in ("330000", "320000")}

    assert await fetch_code(federation, node, genuine) == grpc.StatusCode.OK
    assert RESTRICTED in await profile_levels(federation, node, genuine, RESTRICTED_USCC)
    caplog.set_level(logging.WARNING, logger="credex.node.services.access")
    for name, impostor in impostors.items():
        assert await fetch_code(federation, node, impostor) == grpc.StatusCode.PERMISSION_DENIED
        assert RESTRICTED not in await profile_levels(federation, node, impostor, RESTRICTED_USCC)
        assert f"caller named {name} refused peer rights" in caplog.text


async def test_a_member_without_a_bound_certificate_gets_no_peer_rights(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = federation.bundle_now()
    jiangsu = bundle.member("320000")
    assert jiangsu is not None
    federation.publish(bundle.with_member(jiangsu.model_copy(update={"tls_spki_sha256": ""})).next_version())
    caplog.set_level(logging.WARNING, logger="credex.node.runtime")
    node = await federation.start_node("310000")
    assert "member 320000 has no TLS certificate bound" in caplog.text

    assert await fetch_code(federation, node, member_tls(federation, "320000")) == grpc.StatusCode.PERMISSION_DENIED
    assert await fetch_code(federation, node, member_tls(federation, "330000")) == grpc.StatusCode.OK


def test_the_local_federation_binds_each_members_node_certificate(federation: TestFederation) -> None:
    for member in federation.bundle_now().members:
        cert, _ = member_tls(federation, member.origin)
        assert member.tls_spki_sha256 == spki_sha256(cert.read_bytes())


async def test_a_configured_caller_bound_to_a_key_keeps_its_role_only_with_that_key(
    federation: TestFederation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    genuine, stray = (issue(federation, "audit-office", tmp_path / where) for where in ("genuine", "stray"))
    bound = spki_sha256(genuine[0].read_bytes())
    node = await federation.start_node(
        "310000", access={"callers": {"audit-office": "operator"}, "caller_keys": {"audit-office": bound}}
    )
    await add_restricted_record(node)
    caplog.set_level(logging.WARNING, logger="credex.node.services.access")

    assert await fetch_code(federation, node, genuine) == grpc.StatusCode.OK
    assert RESTRICTED in await profile_levels(federation, node, genuine, RESTRICTED_USCC)
    for _ in range(3):
        assert await fetch_code(federation, node, stray) == grpc.StatusCode.PERMISSION_DENIED
        assert RESTRICTED not in await profile_levels(federation, node, stray, RESTRICTED_USCC)
    assert caplog.text.count("caller named audit-office refused operator rights, served as public") == 1


async def test_privileged_callers_without_a_key_binding_are_named_at_start(
    federation: TestFederation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, _ = issue(federation, "bound-office", tmp_path)
    callers = {"audit-office": "operator", "bound-office": "government", "news-portal": "public"}
    caplog.set_level(logging.WARNING, logger="credex.node.services.server")
    await federation.start_node(
        "310000", access={"callers": callers, "caller_keys": {"bound-office": spki_sha256(cert.read_bytes())}}
    )
    warned = [r.getMessage() for r in caplog.records if "bind it to its key with access.caller_keys" in r.getMessage()]
    assert sorted(message.split()[1] for message in warned) == ["audit-office", "government-office"]


def test_a_key_binding_must_name_a_configured_caller_and_be_a_sha256() -> None:
    with pytest.raises(ValidationError, match=r"access\.callers does not list"):
        AccessConfig(caller_keys={"nobody": "0" * 64})
    with pytest.raises(ValidationError, match="64 lowercase hex digits"):
        AccessConfig(callers={"office": "government"}, caller_keys={"office": "AB" * 32})
