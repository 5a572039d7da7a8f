"""The witness over C2SP tlog-witness's own HTTP wire: any tlog client gets a node's cosignature with
``POST /add-checkpoint``, the spec's body and the spec's answers, and a log asks a witness the trust bundle gives
an https URL that way. The bodies are byte-exact to the spec's examples; what is refused (a rollback, a split
view, a proof that does not verify, a forged or unknown log, a malformed or oversize body) gets the spec's status,
changes nothing, is counted and audited, and leaves other callers' requests alone."""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from credex.adapters.samples import synth
from credex.crypto.cosignature import cosignatures, witness_name
from credex.crypto.keys import SigningKey
from credex.crypto.trust import Member, TrustBundle
from credex.node.channels import PeerChannels
from credex.node.cli import app
from credex.node.embedded import free_port
from credex.node.runtime import Node
from credex.node.witness import CosignatureCollector, wire

from .callers import NATIONAL, PUBLIC, audit_rows
from .conftest import TestFederation, eventually
from .test_tile_http import client
from .test_witness import cosigned_by, witnessed_size
from .witness_support import ForgedLog, set_witnesses

LOG, WITNESS = "310000", "320000"

# The spec's own examples (c2sp.org/tlog-witness), byte for byte.
EM = "\u2014"
SPEC_REQUEST = "".join(
    line + "\n"
    for line in (
        "old 20852014",
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=",
        "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=",
        "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=",
        "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=",
        "",
        "example.com/behind-the-sofa",
        "20852163",
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
        "",
        f"{EM} example.com/behind-the-sofa"
        " Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=",
        f"{EM} example.com/behind-the-sofa"
        " opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=",
    )
).encode()
SPEC_ANSWER = "".join(
    line + "\n"
    for line in (
        f"{EM} witness.example/w1"
        " CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==",
        f"{EM} witness.example/w1"
        " I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==",
        f"{EM} witness.example/w2"
        " AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==",
    )
).encode()


def test_request_and_answer_bodies_are_byte_exact_to_the_spec_s_examples() -> None:
    request = wire.read_request(SPEC_REQUEST)
    assert request.old_size == 20852014
    assert [base64.b64encode(h).decode() for h in request.proof] == SPEC_REQUEST.decode().split("\n")[1:5]
    assert request.checkpoint == SPEC_REQUEST.partition(b"\n\n")[2]
    assert request.checkpoint.startswith(b"example.com/behind-the-sofa\n20852163\n")
    assert wire.request_body(request.old_size, request.proof, request.checkpoint) == SPEC_REQUEST
    assert wire.log_of(request.checkpoint) is None  # not a log of this federation: the witness answers 404

    lines = wire.read_cosignatures(SPEC_ANSWER)
    assert len(lines) == 3 and all(line.startswith("\u2014 witness.example/w") for line in lines)
    assert wire.cosignature_body(lines) == SPEC_ANSWER
    assert wire.size_body(20852014) == b"20852014\n" and wire.read_size(b"20852014\n") == 20852014
    assert wire.request_body(0, [], b"credex/310000\n0\nx\n") == b"old 0\n\ncredex/310000\n0\nx\n"  # no proof from 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"old 4\nAAAA\n", "no empty line"),
        (b"old 04\n\ncredex/310000\n", "no leading zero"),
        (b"old -1\n\ncredex/310000\n", "no leading zero"),
        (b"new 4\n\ncredex/310000\n", "'old '"),
        (b"old 4 \n\ncredex/310000\n", "decimal"),
        (b"old 99999999999999999999\n\ncredex/310000\n", "decimal"),
        (b"old \xd9\xa4\n\ncredex/310000\n", "decimal"),  # an Arabic-Indic four is a digit, not ASCII
        (b"old 4\nnot base64!\n\ncredex/310000\n", "proof line 1"),
        (b"old 4\n" + base64.b64encode(bytes(31)) + b"\n\ncredex/310000\n", "proof line 1"),
        (b"old 4\n" + (base64.b64encode(bytes(32)) + b"\n") * 64 + b"\ncredex/310000\n", "at most 63 lines"),
        (b"old 4\n" + b"\n" * 70_000, "at most"),
    ],
)
def test_a_body_not_in_the_spec_s_form_is_refused_saying_which_part(body: bytes, says: str) -> None:
    with pytest.raises(wire.WireError, match=says):
        wire.read_request(body)


def test_a_log_reads_only_what_the_spec_lets_a_witness_answer() -> None:
    for body in (b"", b"\xff\n", b"junk\n", SPEC_ANSWER.rstrip(b"\n"), SPEC_ANSWER + b"\n"):
        with pytest.raises(wire.WireError):
            wire.read_cosignatures(body)
    for size in (b"", b"7", b"07\n", b"-7\n", b"7 \n", b"1" * 20 + b"\n"):
        with pytest.raises(wire.WireError):
            wire.read_size(size)
    assert wire.log_of(b"credex/310000\n5\n") == "310000"
    for first in (b"credex/31000\n", b"credex/310000 \n", b"Credex/310000\n", b"credex/\xd9\xa4\n", b"\n"):
        assert wire.log_of(first) is None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=63),
    st.binary(max_size=300).map(lambda note: b"credex/310000\n" + note),
)
def test_a_request_reads_back_to_exactly_what_was_written(old: int, proof: list[bytes], checkpoint: bytes) -> None:
    body = wire.request_body(old, proof, checkpoint)
    assert wire.read_request(body) == wire.AddCheckpoint(old, tuple(proof), checkpoint)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_body_is_refused_or_read_as_the_one_request_that_writes_it(body: bytes) -> None:
    """Strict reading: no two bodies mean the same request, so what is audited is what was sent."""
    try:
        request = wire.read_request(body)
    except wire.WireError:
        return
    assert wire.request_body(request.old_size, request.proof, request.checkpoint) == body


def requests_counted(status: str) -> float:
    return REGISTRY.get_sample_value("credex_witness_http_requests_total", {"origin": WITNESS, "status": status}) or 0.0


async def http_witness(federation: TestFederation) -> Node:
    """The witness node, running, named in the bundle as witnessing LOG at its tile server's https URL."""
    port = free_port()
    bundle = set_witnesses(federation, LOG, [WITNESS], quorum=1)
    member = bundle.member(WITNESS)
    assert member is not None
    url = f"https://127.0.0.1:{port}"
    federation.publish(bundle.with_member(member.model_copy(update={"witness_url": url})).next_version())
    return await federation.start_node(WITNESS, tiles_listen=f"127.0.0.1:{port}")


async def post(node: Node, federation: TestFederation, body: bytes, caller: str = LOG) -> httpx.Response:
    async with client(federation, node, caller) as http:
        return await http.post(wire.PATH, content=body)


async def test_a_witness_over_http_cosigns_and_refuses_with_the_spec_s_status_codes(
    federation: TestFederation,
) -> None:
    witness = await http_witness(federation)
    honest, split = ForgedLog(federation, LOG), ForgedLog(federation, LOG, tag="split")
    key = federation.bundle_now().witness_key(WITNESS)
    assert key is not None

    first = await post(witness, federation, wire.request_body(0, [], honest.checkpoint(4)))
    assert first.status_code == 200, first.text
    lines = wire.read_cosignatures(first.content)
    assert witness_name(WITNESS) in cosignatures(
        honest.checkpoint(4).decode() + "".join(lines), {witness_name(WITNESS): key}
    )

    # A log that does not know what the witness holds is told its size, in the spec's form.
    stale = await post(witness, federation, wire.request_body(0, [], honest.checkpoint(6)))
    assert (stale.status_code, stale.headers["content-type"], stale.content) == (409, "text/x.tlog.size", b"4\n")
    grown = await post(witness, federation, wire.request_body(4, honest.proof(4, 6), honest.checkpoint(6)))
    assert grown.status_code == 200

    before = requests_counted("422")
    for body, status, says in [
        (wire.request_body(6, split.proof(6, 9), split.checkpoint(9)), 422, "does not verify"),  # another history
        (wire.request_body(6, honest.proof(6, 9), split.checkpoint(9)), 422, "does not verify"),  # a borrowed proof
        (wire.request_body(0, [bytes(32)], honest.checkpoint(3)), 409, ""),  # from 0 with a proof: stale first
        (wire.request_body(6, [], split.checkpoint(6)), 409, "split view"),  # same size, another root
        (wire.request_body(6, [], honest.checkpoint(5)), 400, "never shrinks"),  # a rollback
        (wire.request_body(6, [], honest.checkpoint(9, key=SigningKey.generate())), 403, "no valid signature"),
        (wire.request_body(0, [], ForgedLog(federation, "330000").checkpoint(3)), 404, "does not witness"),
        (SPEC_REQUEST, 404, "names no log"),
        (b"old 6\n\n" + b"credex/310000\n9\n", 400, "blank line"),
        (b"old 06\n\n" + honest.checkpoint(9), 400, "no leading zero"),
        (wire.request_body(6, [bytes(32)] * 64, honest.checkpoint(9)), 400, "at most 63"),
        (b"old 6\n\n" + b"credex/310000\n\xff\xfe\n", 400, "UTF-8"),
    ]:
        answer = await post(witness, federation, body)
        assert (answer.status_code, says in answer.text) == (status, True), answer.text
    after = await post(witness, federation, wire.request_body(5, [], honest.checkpoint(5)))
    assert (after.status_code, after.content) == (409, b"6\n")  # a rollback claimed from below is a stale request
    assert requests_counted("422") == before + 2
    assert await witnessed_size(witness) == 6  # nothing refused moved it

    assert (await post(witness, federation, wire.request_body(6, honest.proof(6, 9), honest.checkpoint(9)))).is_success
    assert await witnessed_size(witness) == 9

    async def audited() -> list[tuple[str, str]]:
        rows = await audit_rows(witness, "AddCheckpoint")
        statuses = {r["status"] for r in rows}
        return (
            sorted((r["status"], r["detail"]) for r in rows)
            if {"200", "400", "403", "404", "409", "422"} <= statuses
            else []
        )

    rows = await eventually(audited)
    assert ("200", f"http cosigned {LOG} 0->4") in rows and (
        "409",
        f"http conflict {LOG} 0->6: witness holds 4",
    ) in rows
    assert all(detail.startswith("http ") for _, detail in rows)


def mangled(body: bytes, chance: random.Random) -> bytes:
    """``body`` as a careless or hostile client might send it: a byte changed, a cut, a line doubled, or as it is."""
    at = chance.randrange(len(body))
    lines = body.split(b"\n")
    line = chance.randrange(len(lines))
    return chance.choice(
        [
            body,
            body[:at] + bytes([body[at] ^ (1 << chance.randrange(8))]) + body[at + 1 :],
            body[:at],
            body[:at] + b"\n" + body[at:],
            b"\n".join([*lines[:line], lines[line], *lines[line:]]),
            b"\n".join(lines[:line] + lines[line + 1 :]),
        ]
    )


async def test_mangled_requests_get_a_spec_status_and_never_move_the_witness_off_the_one_history(
    federation: TestFederation,
) -> None:
    witness = await http_witness(federation)
    assert witness.pool is not None
    honest, split = ForgedLog(federation, LOG), ForgedLog(federation, LOG, tag="split")
    chance = random.Random(20261122)
    held = 0
    statuses: set[int] = set()
    async with client(federation, witness, LOG) as http:
        assert (await http.post(wire.PATH, content=wire.request_body(0, [], honest.checkpoint(2)))).status_code == 200
        held = 2
        for _ in range(80):
            size = chance.randint(held, 60)
            history = chance.choice([honest, honest, split])
            body = mangled(wire.request_body(held, honest.proof(held, size), history.checkpoint(size)), chance)
            answer = await http.post(wire.PATH, content=body)
            statuses.add(answer.status_code)
            assert answer.status_code in {200, 400, 403, 404, 409, 422}, (answer.status_code, answer.text, body)
            row = await witness.pool.fetchrow("SELECT size, root FROM witness_state WHERE log_origin = $1", LOG)
            assert row is not None and bytes(row["root"]) == honest.tree.root(int(row["size"]))  # one history
            if answer.status_code == 200:
                assert int(row["size"]) == size >= held
                held = size
            else:
                assert int(row["size"]) == held  # a refusal changes nothing
    assert {200, 400, 403, 422} <= statuses  # the run did reach each kind of answer


async def connect(federation: TestFederation, node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TLS connection to ``node``'s HTTP server with the log's node certificate (a peer's)."""
    assert node.tiles is not None
    context = ssl.create_default_context(cafile=federation.layout.ca_dir / "ca.crt")
    member = federation.layout.member_dir(LOG) / "tls"
    context.load_cert_chain(member / "node.crt", member / "node.key")
    return await asyncio.open_connection("127.0.0.1", node.tiles.port, ssl=context)


async def exchange(federation: TestFederation, node: Node, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await connect(federation, node)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_over_http_only_peers_submit_and_only_a_post_of_a_bounded_body_is_read(
    federation: TestFederation,
) -> None:
    witness = await http_witness(federation)
    assert witness.tiles is not None
    honest = ForgedLog(federation, LOG)

    refused = await post(witness, federation, wire.request_body(0, [], honest.checkpoint(3)), caller=PUBLIC)
    assert refused.status_code == 403 and "only federation peers" in refused.text
    async with client(federation, witness, LOG) as http:
        assert (await http.get(wire.PATH)).status_code == 405
    head = b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n"
    declared = await exchange(federation, witness, head + f"Content-Length: {wire.MAX_BODY + 1}\r\n\r\n".encode())
    assert declared.startswith(b"HTTP/1.1 413 ") and b"connection: close" in declared  # refused before any is read
    over = wire.MAX_BODY + 1  # chunked, no length declared: read up to the bound, and no further
    chunked = await exchange(
        federation, witness, head + b"Transfer-Encoding: chunked\r\n\r\n" + f"{over:x}\r\n".encode() + b"x" * over
    )
    assert chunked.startswith(b"HTTP/1.1 413 ")
    async with client(federation, witness, LOG) as http:  # one connection kept alive for both
        assert (await http.post(wire.PATH, content=wire.request_body(0, [], honest.checkpoint(3)))).status_code == 200
        kept = await http.post(wire.PATH, content=wire.request_body(3, honest.proof(3, 5), honest.checkpoint(5)))
        assert kept.status_code == 200
    assert await witnessed_size(witness) == 5
    assert requests_counted("413") >= 2

    # A body that never comes whole is dropped (when the time runs out, or the caller goes), counted, and
    # nobody else waits for it.
    dropped = requests_counted("dropped")
    witness.tiles.request_seconds = 1.0
    partial = head + b"Content-Length: 500\r\n\r\nold 5\n"
    assert await exchange(federation, witness, partial) == b""  # cut off without an answer
    witness.tiles.request_seconds = 15.0
    _, writer = await connect(federation, witness)
    writer.write(partial)
    await writer.drain()
    answer = await post(witness, federation, wire.request_body(5, honest.proof(5, 7), honest.checkpoint(7)))
    assert answer.status_code == 200
    writer.close()

    async def both_counted() -> bool:
        return requests_counted("dropped") == dropped + 2

    await eventually(both_counted)
    assert await witnessed_size(witness) == 7

    # curl's way with a body over 1 KiB: the head first, the body once the witness says to go on.
    body = wire.request_body(7, honest.proof(7, 8), honest.checkpoint(8))
    reader, writer = await connect(federation, witness)
    writer.write(head + f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 ")
    writer.write(body)
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert await witnessed_size(witness) == 8


async def ingest(node: Node, tmp_path: Path, rows: int, batch: int) -> int:
    path = tmp_path / f"rows{batch}.csv"
    synth.write(path, synth.SynthSpec(region=LOG, rows=rows, bad_share=0.0, first_row=1000 * batch))
    await node.ingest([path], NATIONAL)
    return (await node.status()).own_events


async def test_a_log_asks_a_witness_with_an_https_url_over_http_and_recovers_from_a_409(
    federation: TestFederation, tmp_path: Path
) -> None:
    """The witness is asked on its tlog-witness endpoint only (the gRPC service never sees a request); when the
    log has lost its record of what the witness cosigned, the witness's 409 tells it where to prove from."""
    witness = await http_witness(federation)
    origin = await federation.start_node(LOG)
    assert origin.pool is not None and origin.keeper is not None

    async def cosigned_at(size: int) -> bool:
        held = await origin.keeper.latest(LOG)
        return held is not None and held.size >= size and cosigned_by(federation, held.note, WITNESS)

    size = await ingest(origin, tmp_path, 30, 0)
    await eventually(lambda: cosigned_at(size))
    assert await witnessed_size(witness) is not None

    # The log forgets what the witness cosigned (a restore from an older backup, say) and grows.
    await origin.pool.execute("DELETE FROM checkpoint_cosignatures WHERE origin = $1", LOG)
    held = await witnessed_size(witness)
    size = await ingest(origin, tmp_path, 20, 1)
    await eventually(lambda: cosigned_at(size))

    rows = [r["detail"] for r in await audit_rows(witness, "AddCheckpoint")]
    assert any(d.startswith(f"http conflict {LOG} 0->") and d.endswith(f"witness holds {held}") for d in rows), rows
    assert any(d.startswith(f"http cosigned {LOG} {held}->") for d in rows), rows
    assert all(d.startswith("http ") for d in rows), rows  # never over gRPC


async def test_a_witness_url_is_an_https_prefix() -> None:
    for url in ("http://127.0.0.1:1", "https://h/", "https://h:port", "https://u@h", "https://h?a=1", " https://h"):
        with pytest.raises(ValueError, match="witness_url"):
            Member(origin=WITNESS, name="w", witness_url=url)
    assert Member(origin=WITNESS, name="w", witness_url="https://w.example:8443/tlog").witness_url


def test_trust_add_member_gives_a_witness_an_https_url_and_keeps_it(tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.output

    assert run("keys", "init", "--dir", str(tmp_path / "js"))[0] == 0
    draft = tmp_path / "draft.json"
    assert run("trust", "new", str(draft), "--federation", "yrd")[0] == 0
    member = ("trust", "add-member", str(draft), "--origin", WITNESS, "--name", "江苏省", "--endpoint", "js:50051")
    key = ("--public-key", str(tmp_path / "js" / "signing.pub"))
    assert run(*member, *key)[0] == 0
    assert b"witness_url" not in draft.read_bytes()  # unused, left out: an older bundle keeps its digest
    assert run(*member, *key, "--witness-url", "https://js:50081")[0] == 0
    assert _drafted(draft).witness_url == "https://js:50081"
    assert run(*member, *key)[0] == 0
    assert _drafted(draft).witness_url == "https://js:50081"  # kept when not given
    refused = run(*member, *key, "--witness-url", "http://js:50081")
    assert refused[0] == 1 and "https://" in refused[1]
    assert run(*member, *key, "--witness-url", "")[0] == 0
    assert _drafted(draft).witness_url == ""  # asked over gRPC again


def _drafted(draft: Path) -> Member:
    member = TrustBundle.from_draft(draft).member(WITNESS)
    assert member is not None
    return member


async def test_a_log_told_by_an_http_witness_that_it_holds_another_view_keeps_nothing_and_says_why(
    federation: TestFederation, tmp_path: Path
) -> None:
    """A witness that cosigned a forged history of the log (the log's key stolen) answers the honest log with its
    size, then refuses the honest proof from there (422): the log keeps no cosignature and the reason is given."""
    witness = await http_witness(federation)
    forged = ForgedLog(federation, LOG, tag="stolen-key")
    assert (await post(witness, federation, wire.request_body(0, [], forged.checkpoint(3)))).status_code == 200
    origin = await federation.start_node(LOG)
    pool = origin.pool
    assert pool is not None
    size = await ingest(origin, tmp_path, 10, 0)

    async def signed() -> bool:
        held = await pool.fetchval("SELECT max(size) FROM checkpoints WHERE origin = $1 AND state = 'own'", LOG)
        return bool(held == size)

    await eventually(signed)
    tls = origin.config.grpc.tls
    channels = PeerChannels(tls.client_ca, tls.cert, tls.key)
    try:
        asked = CosignatureCollector(LOG, pool, federation.bundle_now, origin.logbook, channels)
        said = (await asked.collect())[WITNESS]
    finally:
        await channels.close()
    assert said.startswith("failed: ") and " answered 422: " in said and "does not verify" in said, said
    assert await pool.fetchval("SELECT count(*) FROM checkpoint_cosignatures WHERE origin = $1", LOG) == 0
    assert await witnessed_size(witness) == 3  # still the forged view, which the federation can now prove


async def test_a_witness_that_answers_a_byte_at_a_time_is_given_up_on_at_the_deadline(
    federation: TestFederation, tmp_path: Path
) -> None:
    """A witness URL that keeps the log's request alive with a header line every second (each read well within
    any per-read timeout) must not hold the log's collection round, and so every other witness, for good."""
    bundle = set_witnesses(federation, LOG, [WITNESS], quorum=1)
    dripping = asyncio.Event()
    connections: list[asyncio.StreamWriter] = []

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        dripping.set()
        try:
            while True:
                writer.write(b"x-drip: 1\r\n")
                await writer.drain()
                await asyncio.sleep(1.0)
        except (ConnectionError, ssl.SSLError):
            writer.close()

    origin = await federation.start_node(LOG)
    pool = origin.pool
    assert pool is not None
    tls = origin.config.grpc.tls
    assert tls.cert is not None and tls.key is not None
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(tls.cert, tls.key)
    server = await asyncio.start_server(drip, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    member = bundle.member(WITNESS)
    assert member is not None
    url = f"https://127.0.0.1:{port}"
    federation.publish(bundle.with_member(member.model_copy(update={"witness_url": url})).next_version())
    size = await ingest(origin, tmp_path, 10, 0)

    async def signed() -> bool:
        held = await pool.fetchval("SELECT max(size) FROM checkpoints WHERE origin = $1 AND state = 'own'", LOG)
        return bool(held == size)

    await eventually(signed)
    channels = PeerChannels(tls.client_ca, tls.cert, tls.key)
    try:
        asked = CosignatureCollector(LOG, pool, federation.bundle_now, origin.logbook, channels)
        # The bound only turns a hang into a failure; the collector gives up on its own deadline, long before it.
        said = (await asyncio.wait_for(asked.collect(), 120))[WITNESS]
    finally:
        await channels.close()
        server.close()
        for writer in connections:
            writer.close()
        await server.wait_closed()
    assert dripping.is_set()
    assert said.startswith("failed: ") and "did not answer within" in said, said
