"""gRPC channels to other nodes, with the node's client certificate when TLS is on.

A refused TLS handshake reaches a gRPC client as nothing more than
``UNAVAILABLE: Socket closed``; :func:`call_failed` turns that and its siblings
into what is most likely wrong and which option fixes it, judged from what the
caller gave (no CA, no client certificate, a certificate from another CA, a
server name the node's certificate does not list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx

from credex.crypto.tls import client_context
from credex.errors import CredexError
from credex.v1 import exchange_pb2_grpc, log_pb2_grpc, lookup_pb2_grpc, witness_pb2_grpc

_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 1),
)


def open_channel(
    endpoint: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    options: tuple[tuple[str, Any], ...] = (),
) -> grpc.aio.Channel:
    """A channel to ``endpoint``; TLS when a CA is given, mutual TLS with a certificate too.

    ``options`` are added to the node's own (a subscriber may want a small HTTP/2 window, say).
    """
    every = (*_OPTIONS, *options)
    if ca is None:
        return grpc.aio.insecure_channel(endpoint, options=every)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.aio.secure_channel(endpoint, credentials, options=every)


class PeerChannels:
    """One channel per endpoint, reused for the node's lifetime; one HTTPS client for what peers serve over HTTP."""

    def __init__(self, ca: Path | None, cert: Path | None, key: Path | None) -> None:
        self._tls = (ca, cert, key)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._https: httpx.AsyncClient | None = None

    def https(self) -> httpx.AsyncClient:
        """The client for peers' HTTPS endpoints (witnesses' tlog-witness): the same CA and certificate as gRPC."""
        if self._https is None:
            self._https = httpx.AsyncClient(verify=client_context(*self._tls), follow_redirects=False)
        return self._https

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        if endpoint not in self._channels:
            ca, cert, key = self._tls
            self._channels[endpoint] = open_channel(endpoint, ca=ca, cert=cert, key=key)
        return self._channels[endpoint]

    def exchange(self, endpoint: str) -> exchange_pb2_grpc.ExchangeServiceAsyncStub:
        return exchange_pb2_grpc.ExchangeServiceStub(self.channel(endpoint))

    def log(self, endpoint: str) -> log_pb2_grpc.LogServiceAsyncStub:
        return log_pb2_grpc.LogServiceStub(self.channel(endpoint))

    def lookup(self, endpoint: str) -> lookup_pb2_grpc.LookupServiceAsyncStub:
        return lookup_pb2_grpc.LookupServiceStub(self.channel(endpoint))

    def witness(self, endpoint: str) -> witness_pb2_grpc.WitnessServiceAsyncStub:
        return witness_pb2_grpc.WitnessServiceStub(self.channel(endpoint))

    def failure(self, exc: grpc.aio.AioRpcError, endpoint: str, call: str) -> CallFailed:
        """What a failed ``call`` to ``endpoint`` most likely means, judged with this set's TLS files."""
        ca, cert, key = self._tls
        return call_failed(exc, endpoint, call, ca=ca, cert=cert, key=key)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        if self._https is not None:
            await self._https.aclose()
            self._https = None


class CallFailed(CredexError):
    """A call to a node failed; the message says what most likely went wrong and what to do."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


def call_failed(
    exc: grpc.aio.AioRpcError,
    endpoint: str,
    call: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> CallFailed:
    """A :class:`CallFailed` for ``exc``, raised by ``call`` to ``endpoint`` over a channel opened with these files."""
    code, details = exc.code(), exc.details() or ""
    where = f"{endpoint}: {call}"
    if code != grpc.StatusCode.UNAVAILABLE:
        return CallFailed(f"{where}: {code.name}: {details}", code)
    if "Socket closed" in details:
        # The node dropped the connection during the handshake: it speaks TLS and refused us.
        if ca is None:
            hint = (
                "the node speaks TLS and no CA was given: give --ca (the federation CA, ca.crt) with --cert and"
                " --key, or --config with a node.toml whose [grpc.tls] names them"
            )
        elif cert is None or key is None:
            hint = (
                "no client certificate was given and the node accepts only callers with one from the federation"
                " CA: give --cert and --key (`credex tls issue` makes them), or --config"
            )
        else:
            hint = (
                f"the node refused the client certificate {cert}: it is most likely not issued by the federation"
                " CA the node trusts (or has expired); give --cert and --key of one `credex tls issue` made under"
                " the federation CA"
            )
        return CallFailed(f"{where}: the TLS handshake was refused: {hint}", code)
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return CallFailed(
            f"{where}: the node's certificate is not issued by the CA given ({ca}): give the federation CA with --ca",
            code,
        )
    if "Hostname Verification" in details or "server name" in details.lower():
        host = endpoint.rsplit(":", 1)[0]
        return CallFailed(
            f"{where}: the node's certificate does not name {host}: give --node with a host name or address its"
            " certificate lists (the --host given to `credex tls issue`)",
            code,
        )
    return CallFailed(f"{where}: the node is unreachable ({details}): check --node (host:port) and that it runs", code)
