"""The trust bundle in force: one for every component, newer only, and a refresh needs no restart."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from credex.crypto.tls import spki_sha256
from credex.crypto.trust import Member, TrustBundle
from credex.node.trust import BundleRollback

from .conftest import TestFederation, eventually
from .trust_support import fetch_code, issue, member_tls, quick_refresh

__all__ = ["quick_refresh"]  # a fixture, used by name


async def test_a_bundle_older_than_one_the_node_trusted_is_refused_at_restart(federation: TestFederation) -> None:
    first = federation.layout.bundle.read_bytes()
    await federation.start_node("310000")
    await federation.stop_node("310000")
    federation.publish(federation.bundle_now().next_version())
    second = federation.layout.bundle.read_bytes()
    await federation.start_node("310000")
    await federation.stop_node("310000")

    federation.layout.bundle.write_bytes(first)  # validly signed, but version 1
    with pytest.raises(BundleRollback, match=r"version 1 .*already trusted: version 2.*newest signed bundle"):
        await federation.start_node("310000")

    other_version_2 = federation.bundle_now().model_copy(update={"version": 2, "federation": "yangtze-river-delta"})
    federation.publish(other_version_2.without_member("330000"))
    with pytest.raises(BundleRollback, match="another bundle with the same version"):
        await federation.start_node("310000")

    federation.layout.bundle.write_bytes(second)
    node = await federation.start_node("310000")
    assert node.bundle.version == 2


async def test_a_node_running_refuses_an_older_bundle_and_keeps_the_one_in_force(
    federation: TestFederation, quick_refresh: None
) -> None:
    federation.publish(federation.bundle_now().next_version())
    node = await federation.start_node("310000")
    newest = node.bundle
    stale = newest.model_copy(update={"version": 1}).without_member("320000")
    federation.publish(stale)
    federation.publish(newest.next_version())  # then a genuine newer one arrives
    await eventually(lambda: _version_is(node.bundle.version, 3))
    federation.publish(stale)
    assert (await node.status()).origin == "310000"
    assert node.bundle.member("320000") is not None


async def _version_is(current: int, wanted: int) -> bool:
    return current == wanted


async def test_a_refresh_gives_and_takes_peer_rights_without_a_restart(
    federation: TestFederation, tmp_path: Path, quick_refresh: None
) -> None:
    node = await federation.start_node("310000")
    zhejiang = member_tls(federation, "330000")
    anhui = issue(federation, "340000", tmp_path / "anhui")  # not a member yet
    assert await fetch_code(federation, node, zhejiang) == grpc.StatusCode.OK
    assert await fetch_code(federation, node, anhui) == grpc.StatusCode.PERMISSION_DENIED

    newcomer = Member(
        origin="340000", name="安徽省", endpoint="127.0.0.1:1", tls_spki_sha256=spki_sha256(anhui[0].read_bytes())
    )
    federation.publish(federation.bundle_now().without_member("330000").with_member(newcomer).next_version())

    async def switched() -> bool:
        return (
            await fetch_code(federation, node, zhejiang) == grpc.StatusCode.PERMISSION_DENIED
            and await fetch_code(federation, node, anhui) == grpc.StatusCode.OK
        )

    await eventually(switched)


async def test_a_refresh_to_a_version_the_database_knows_to_be_old_leaves_the_bundle_in_force(
    federation: TestFederation, quick_refresh: None, caplog: pytest.LogCaptureFixture
) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None and node.bundle.version == 1
    async with node.pool.acquire() as conn:  # another replica of this node already took version 5
        await conn.execute("UPDATE trust_state SET version = 5")
    caplog.set_level(logging.WARNING, logger="credex.node.runtime")

    federation.publish(federation.bundle_now().without_member("330000").next_version())  # version 2
    await eventually(lambda: _logged(caplog, "version 2 (digest"))
    assert "already trusted: version 5" in caplog.text
    assert node.bundle.version == 1
    assert node.bundle.member("330000") is not None


async def test_a_component_failing_to_follow_a_bundle_stops_neither_the_others_nor_the_refresh(
    federation: TestFederation, quick_refresh: None, caplog: pytest.LogCaptureFixture
) -> None:
    node = await federation.start_node("310000")
    heard: list[int] = []

    def broken(bundle: TrustBundle) -> None:
        raise RuntimeError("this component cannot follow")

    node.trust.subscribe(broken)
    node.trust.subscribe(lambda bundle: heard.append(bundle.version))

    federation.publish(federation.bundle_now().next_version())
    await eventually(lambda: _is(heard, [2]))
    assert node.bundle.version == 2
    assert "a component failed to follow it" in caplog.text
    federation.publish(federation.bundle_now().next_version())  # and the refresh is still looking
    await eventually(lambda: _is(heard, [2, 3]))


async def test_a_bundle_below_the_minimum_version_is_refused_even_when_the_database_remembers_none(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BundleRollback, match=r"version 1, below trust.min_version = 2.*version 2 or later"):
        await federation.start_node("310000", trust={"min_version": 2})

    caplog.set_level(logging.WARNING, logger="credex.node.trust")
    await federation.start_node("310000")  # a first start: nothing to compare with, and it says so
    assert "NO TRUST BUNDLE VERSION RECORDED" in caplog.text
    assert "version 1 is recorded as the floor" in caplog.text
    await federation.stop_node("310000")

    caplog.clear()
    await federation.start_node("310000")  # now the database remembers: no warning
    assert "NO TRUST BUNDLE VERSION RECORDED" not in caplog.text


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def _is(value: object, wanted: object) -> bool:
    return value == wanted
