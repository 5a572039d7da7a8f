"""gRPC channels to other nodes, with the node's client certificate when TLS is on."""

from __future__ import annotations

from pathlib import Path

import grpc

from credex.v1 import exchange_pb2_grpc, log_pb2_grpc, lookup_pb2_grpc

_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.enable_retries", 1)]


def open_channel(
    endpoint: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> grpc.aio.Channel:
    """A channel to ``endpoint``; TLS when a CA is given, mutual TLS with a certificate too."""
    if ca is None:
        return grpc.aio.insecure_channel(endpoint, options=_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.aio.secure_channel(endpoint, credentials, options=_OPTIONS)


class PeerChannels:
    """One channel per endpoint, reused for the node's lifetime."""

    def __init__(self, ca: Path | None, cert: Path | None, key: Path | None) -> None:
        self._tls = (ca, cert, key)
        self._channels: dict[str, grpc.aio.Channel] = {}

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

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
