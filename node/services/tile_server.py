"""Every origin's log, read-only over HTTP at the C2SP tlog-tiles paths: any auditor's tooling, no gRPC.

Under ``/<origin>/`` (an origin this node holds) it serves ``checkpoint`` (the
newest checkpoint this node agrees with, as the origin signed it),
``tile/<L>/<N>[.p/<W>]`` (hashes, from the store's tiles) and
``tile/entries/<N>[.p/<W>]`` (the stored envelopes, uint16-length-prefixed; a
bundle that would hold an envelope longer than 65,535 bytes, which only a peer that
broke the protocol signs, is answered 501 with the seq in ``credex-oversize-seq``).
A full tile never changes and is cached for a year as immutable; a partial tile
and the checkpoint are cached briefly. A partial tile is served from the wider
tile held (it is a prefix of it); a width or a tile the tiles do not cover yet is 404.
Hash tiles come from the LogBook's tile cache when it holds them at least as wide as
asked (committed tiles only grow, so that is the store's answer exactly), and a tile
read from the store is kept there; auditors fetching the same tiles then cost no query.

Why h11 on asyncio streams and not a web framework: the server answers GET and
HEAD on three kinds of path and nothing else, so all it needs is a correct
HTTP/1.1 parser; h11 is that (sans-I/O, well kept, already installed as httpx's
own), and asyncio's server gives TLS with the same certificate and client CA as
gRPC. Attackers get bounded parsing (h11's 16 KiB head limit, no bodies
accepted), an idle timeout, a cap on open connections, and one answer at a
time per connection.

The one path written to is the witness's: ``POST /add-checkpoint`` (C2SP
tlog-witness), whose body alone is read, bounded; see
:mod:`~credex.node.services.witness_http`.

Hashes and checkpoints are public by design; entry bundles carry records, so
they are served only to callers who may exchange events (peers, operators),
identified as gRPC identifies them (:func:`~credex.node.services.access.caller_of`).
Every answer is audited, committed before the bytes leave; refusals are audited
without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

import asyncpg
import h11

from credex.crypto.merkle import HASH_SIZE
from credex.crypto.tiles import MAX_ENTRY, TILE_WIDTH, TileId, entry_bundle, parse_tile_path
from credex.crypto.tls import spki_sha256
from credex.crypto.trust import TrustBundle
from credex.domain.regions import is_origin_code
from credex.node.chain import CheckpointKeeper
from credex.node.config import NodeConfig
from credex.node.services.access import Caller, caller_of
from credex.node.services.audit_trail import AuditLog
from credex.node.services.http_answer import Answer, audited, text
from credex.node.services.refusals import Refusals
from credex.node.services.server import ServerError
from credex.node.services.witness_http import WitnessEndpoint
from credex.node.store import tiles
from credex.node.witness import wire as witness_wire

log = logging.getLogger(__name__)

IDLE_SECONDS = 15.0  # a connection that takes longer to send one whole request (head) is closed
MAX_CONNECTIONS = 256
_IMMUTABLE = "public, max-age=31536000, immutable"
_SHORT = "public, max-age=5"
_CHECKPOINT = "no-cache"
METHOD = "tiles.GET"


def server_ssl(config: NodeConfig) -> ssl.SSLContext | None:
    """HTTPS with gRPC's certificate; client certificates required when gRPC requires them."""
    tls = config.grpc.tls
    if tls.cert is None or tls.key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca is not None:
        context.load_verify_locations(tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class TileServer:
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        keeper: CheckpointKeeper,
        audit: AuditLog,
        bundle: Callable[[], TrustBundle],
    ) -> None:
        self.config = config
        self.pool = pool
        self.keeper = keeper
        self.audit = audit
        # Refusals of the tiles and of the witness, a few rows a second of each kind: the rest summed up.
        self.refusals = Refusals(audit, config.origin)
        self.bundle = bundle
        self.witness = WitnessEndpoint(config, pool, bundle, keeper.logbook, audit, self.refusals)
        self._server: asyncio.Server | None = None
        self._open = asyncio.Semaphore(MAX_CONNECTIONS)
        self._writers: set[asyncio.StreamWriter] = set()  # open connections, closed at stop
        self.request_seconds = IDLE_SECONDS
        self.port = 0
        self.host = ""

    async def start(self) -> int:
        listen = self.config.tiles_listen
        host, _, port = listen.rpartition(":")
        try:
            self._server = await asyncio.start_server(
                self._connection, host.strip("[]") or "127.0.0.1", int(port), ssl=server_ssl(self.config)
            )
        except (OSError, ValueError) as exc:
            raise ServerError(
                f"the tile server cannot listen on {listen!r} ({exc}): set tiles_listen to a free host:port,"
                " or to an empty string to turn it off"
            ) from None
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    # -- one connection ------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open.locked():
            writer.close()  # over the cap: refused before any work
            return
        async with self._open:
            self._writers.add(writer)
            try:
                await self._converse(reader, writer)
            except (ConnectionError, TimeoutError, h11.ProtocolError, ssl.SSLError):
                pass
            finally:
                self._writers.discard(writer)
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                    await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = h11.Connection(h11.SERVER)
        caller = self._caller(writer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_seconds  # per request, not per read: a byte a while buys no time
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:  # not HTTP/1.1, or a head over 16 KiB: say so, then close
                if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    body = f"not a request this server reads: {exc}\n".encode()[:500]
                    writer.write(
                        http.send(
                            h11.Response(
                                status_code=status,
                                headers=[("content-length", str(len(body))), ("connection", "close")],
                            )
                        )
                        or b""
                    )
                    writer.write(body)
                    await writer.drain()
                return
            if event is h11.NEED_DATA:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(16384)
                http.receive_data(data)
                continue
            if isinstance(event, h11.Request) and event.target == witness_wire.PATH.encode():
                answer = await self._add_checkpoint(caller, http, reader, writer, event, deadline)
                # A body left unread (refused on the head) closes the connection; one read whole keeps it alive.
                writer.write(_render(http, event, answer, close=http.their_state is not h11.DONE))
                await writer.drain()
                if http.our_state is h11.DONE and http.their_state is h11.DONE:
                    http.start_next_cycle()
                    deadline = loop.time() + self.request_seconds
                continue
            if isinstance(event, h11.Request):
                answer = await self._answer(caller, event)
                # A body is never read: the answer closes the connection instead of leaving it mid-request.
                writer.write(_render(http, event, answer, close=_has_body(event)))
                await writer.drain()
                continue
            if isinstance(event, h11.EndOfMessage):
                if http.our_state is h11.DONE and http.their_state is h11.DONE:
                    http.start_next_cycle()
                    deadline = loop.time() + self.request_seconds
                    continue
                return
            if isinstance(event, h11.Data):
                return  # requests here have no body: a caller sending one is not talking to a log
            return  # ConnectionClosed, PAUSED

    def _caller(self, writer: asyncio.StreamWriter) -> Caller:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        ssl_object: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        name = None
        der = b""
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True) or b""
            for rdn in (ssl_object.getpeercert() or {}).get("subject", ()):
                for attribute in rdn:
                    if attribute[0] == "commonName":
                        name = str(attribute[1])

        def presented() -> str:
            return spki_sha256(ssl.DER_cert_to_PEM_cert(der).encode()) if der else ""

        return caller_of(name, presented, address, self.config.access, self.bundle())

    # -- the witness (C2SP tlog-witness) ---------------------------------------------------

    async def _add_checkpoint(
        self,
        caller: Caller,
        http: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        deadline: float,
    ) -> Answer:
        """POST /add-checkpoint: refused on its head, or its body read (bounded, by the deadline) and judged."""
        chunked = any(n == b"transfer-encoding" for n, _ in request.headers)
        lengths = [v for n, v in request.headers if n == b"content-length"]
        length = int(lengths[0]) if lengths and not chunked and lengths[0].isdigit() else None  # h11 framed it
        reply = self.witness.admit(caller, request.method, length)
        if reply is None:
            if http.they_are_waiting_for_100_continue:  # curl asks so before a body over 1 KiB
                writer.write(http.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            try:
                body = await _body(http, reader, deadline, witness_wire.MAX_BODY)
            except (ConnectionError, TimeoutError, h11.ProtocolError, ssl.SSLError) as exc:
                self.witness.dropped(caller, type(exc).__name__)
                raise
            reply = await self.witness.answer(caller, body)
        return reply

    # -- what is asked ------------------------------------------------------------------

    async def _answer(self, caller: Caller, request: h11.Request) -> Answer:
        path = request.target.decode("ascii", errors="replace")
        if request.method not in (b"GET", b"HEAD"):
            answer = text(405, "only GET and HEAD")
        elif _has_body(request):
            answer = text(400, "a GET carries no body")
        else:
            try:
                answer = await self._resolve(caller, path)
            except Exception:
                log.exception("tile server: %s failed", path[:200])
                answer = text(500, "the node could not answer; see its log")
        return await audited(self.audit, self.refusals, caller, METHOD, answer, path, carries=answer.status == 200)

    async def _resolve(self, caller: Caller, path: str) -> Answer:
        origin, _, rest = path.removeprefix("/").partition("/")
        if not path.startswith("/") or not is_origin_code(origin):
            return text(404, "paths are /<origin>/checkpoint and /<origin>/tile/...")
        if rest == "checkpoint":
            held = await self.keeper.latest(origin)
            if held is None:
                return text(404, f"no checkpoint of {origin} is held")
            return Answer(200, held.note.encode(), cache=_CHECKPOINT)
        request = parse_tile_path(rest)
        if request is None:
            return text(404, "not a tlog-tiles path")
        cache = _IMMUTABLE if request.width == TILE_WIDTH else _SHORT
        if request.level is None:
            if not caller.may_exchange:
                return text(403, "entry bundles carry records: only peers and operators may read them")
            async with self.pool.acquire() as conn:
                envelopes = await tiles.entries(conn, origin, request.index, request.width)
            if envelopes is None:
                return text(404, f"{origin}'s log does not hold that entry bundle")
            oversize = next((i for i, e in enumerate(envelopes) if len(e) > MAX_ENTRY), None)
            if oversize is not None:
                return _oversize(origin, request.index * TILE_WIDTH + oversize + 1, len(envelopes[oversize]))
            return Answer(200, entry_bundle(envelopes), "application/octet-stream", cache)
        tile = TileId(request.level, request.index)
        book = self.keeper.logbook.cache  # the tiles proofs read last: a tile held wide enough is the store's
        content = book.tile(origin, tile, request.width)
        if content is None:
            async with self.pool.acquire() as conn:  # outside a transaction: committed, so the cache may keep it
                found, inner = await tiles.read_for_proofs(conn, origin, [tile])
            book.keep(origin, found, inner)
            content = book.tile(origin, tile, request.width) or found.get(tile, b"")[: request.width * HASH_SIZE]
        if len(content) < request.width * HASH_SIZE:
            return text(404, f"{origin}'s log does not hold that tile")
        return Answer(200, content, "application/octet-stream", cache)


async def _body(http: h11.Connection, reader: asyncio.StreamReader, deadline: float, limit: int) -> bytes | None:
    """The request's whole body, or None once it runs past ``limit`` bytes (the rest is left unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            async with asyncio.timeout_at(deadline):
                data = await reader.read(16384)
            http.receive_data(data)
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise ConnectionError("the connection closed before the request's body ended")


def _oversize(origin: str, seq: int, size: int) -> Answer:
    """The answer for an entry bundle holding an entry a uint16 length cannot carry: 501, naming it.

    Not 500 (nothing failed) nor 404 (the entries are held): this server cannot represent
    the bundle in the tlog-tiles format, now or ever, since a signed log never changes. 501 is
    also cacheable by default. Narrower partial bundles, the hash tiles and the checkpoint still
    serve; the entry itself is fetched over gRPC FetchEvents.
    """
    return Answer(
        501,
        (
            f"{origin}'s entry at seq {seq} is {size:,} bytes, longer than a tlog-tiles entry may be"
            f" ({MAX_ENTRY:,}): this bundle cannot be served. Its hash is in the hash tiles; fetch the entry"
            f" over gRPC FetchEvents (from_seq={seq}). {origin} signed it against the protocol (alarm entry.oversize)\n"
        ).encode(),
        cache=_SHORT,
        headers=(("credex-oversize-seq", str(seq)),),
    )


def _has_body(request: h11.Request) -> bool:
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
        for name, value in request.headers
    )


def _render(http: h11.Connection, request: h11.Request, answer: Answer, *, close: bool) -> bytes:
    headers = [
        ("content-type", answer.content_type),
        ("content-length", str(len(answer.body))),
        ("cache-control", answer.cache),
        ("x-content-type-options", "nosniff"),
        *answer.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    out = http.send(h11.Response(status_code=answer.status, headers=headers)) or b""
    if request.method != b"HEAD":
        out += http.send(h11.Data(data=answer.body)) or b""
    out += http.send(h11.EndOfMessage()) or b""
    return out
