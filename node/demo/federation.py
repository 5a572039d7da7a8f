"""A local federation: every member's keys, certificates, config and the signed trust bundle.

``credex demo``, the tests and the benchmarks all build their federations here,
so they exercise exactly what an operator would set up by hand with
``credex keys init`` and ``credex trust``: one folder per member holding its
``node.toml``, signing key and TLS certificate, plus a federation folder with the
governing key, the CA and the bundle. Services (PostgreSQL, the broker) are
passed in, so many nodes can share one embedded server each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credex.crypto.keys import SigningKey, load_public
from credex.crypto.pseudonym import Pseudonymizer
from credex.crypto.tls import CertificateAuthority, spki_sha256
from credex.crypto.trust import Member, MemberKey, TrustBundle
from credex.domain.regions import region_name
from credex.node.config import NodeConfig, load_config
from credex.node.embedded import free_port
from credex.node.runtime import Node

log = logging.getLogger(__name__)

GOVERNMENT_CLIENT = "government-office"
WITNESS_KEY = "witness.key"  # each member's cosigning key, beside its signing key


@dataclass
class FederationLayout:
    root: Path

    @property
    def federation_dir(self) -> Path:
        return self.root / "federation"

    @property
    def bundle(self) -> Path:
        return self.federation_dir / "bundle.json"

    @property
    def federation_key(self) -> Path:
        return self.federation_dir / "federation.key"

    @property
    def federation_public(self) -> Path:
        return self.federation_dir / "federation.pub"

    @property
    def pseudonym_key(self) -> Path:
        return self.federation_dir / "pseudonym.key"

    @property
    def ca_dir(self) -> Path:
        return self.federation_dir / "ca"

    def member_dir(self, origin: str) -> Path:
        return self.root / origin

    def config_path(self, origin: str) -> Path:
        return self.member_dir(origin) / "node.toml"

    def client_tls(self, name: str = GOVERNMENT_CLIENT) -> tuple[Path, Path, Path]:
        """(CA, certificate, key) of a client identity issued for this federation."""
        return self.ca_dir / "ca.crt", self.ca_dir / f"{name}.crt", self.ca_dir / f"{name}.key"


@dataclass
class LocalFederation:
    root: Path
    origins: Sequence[str]
    tls: bool = True
    federation_name: str = "yangtze-river-delta"
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layout = FederationLayout(self.root)

    def prepare(self, extra_clients: Sequence[str] = (GOVERNMENT_CLIENT,)) -> TrustBundle:
        """Create keys, certificates, configs and the signed bundle; reuse what already exists."""
        layout = self.layout
        layout.federation_dir.mkdir(parents=True, exist_ok=True)
        if not layout.federation_key.exists():
            SigningKey.generate().save_as(layout.federation_key, layout.federation_public)
        federation_key = SigningKey.load(layout.federation_key)
        if not layout.pseudonym_key.exists():
            Pseudonymizer.create(layout.pseudonym_key)
        ca = None
        if self.tls:
            if (layout.ca_dir / "ca.crt").exists():
                ca = CertificateAuthority.load(layout.ca_dir)
            else:
                ca = CertificateAuthority.create(f"{self.federation_name} federation CA")
                ca.write(layout.ca_dir)
            for client in extra_clients:
                if not (layout.ca_dir / f"{client}.crt").exists():
                    ca.issue(client, []).write(layout.ca_dir, client)
        bundle = TrustBundle(federation=self.federation_name, tls_ca=ca.cert_pem.decode() if ca else "")
        for origin in self.origins:
            member_dir = layout.member_dir(origin)
            if not (member_dir / "keys" / "signing.key").exists():
                SigningKey.generate().save(member_dir / "keys")
            key = SigningKey.load(member_dir / "keys")
            witness_key = member_dir / "keys" / WITNESS_KEY
            if not witness_key.exists():
                SigningKey.generate().save_as(witness_key, witness_key.with_suffix(".pub"))
            config_path = layout.config_path(origin)
            if config_path.exists():
                port = int(load_config(config_path).grpc.listen.rsplit(":", 1)[1])
            else:
                port = free_port()
                if ca is not None:
                    ca.issue(origin, ["127.0.0.1", "localhost"]).write(member_dir / "tls", "node")
                config_path.write_text(self._config_text(origin, port), encoding="utf-8")
            node_cert = member_dir / "tls" / "node.crt"
            bundle = bundle.with_member(
                Member(
                    origin=origin,
                    name=region_name(origin),
                    endpoint=f"127.0.0.1:{port}",
                    keys=(MemberKey(key_id=key.key_id, public_key=key.public_b64),),
                    # Peer rights go to this certificate's key, not to any certificate with the name.
                    tls_spki_sha256=spki_sha256(node_cert.read_bytes()) if node_cert.exists() else "",
                    witness_key=SigningKey.load(witness_key).public_b64,
                )
            )
        return self._publish(bundle, federation_key)

    def _publish(self, bundle: TrustBundle, federation_key: SigningKey) -> TrustBundle:
        """Sign ``bundle`` unless the one on disk already says the same; a changed one gets a higher version.

        Nodes remember the newest version they trusted and refuse an older or a different
        one of the same version, so a federation prepared again must not go back to version 1.
        """
        if self.layout.bundle.exists():
            current = self.bundle_now()
            same = (current.federation, current.members, current.tls_ca)
            if same == (bundle.federation, bundle.members, bundle.tls_ca):
                return current
            bundle = bundle.model_copy(update={"version": current.version + 1})
        self.layout.bundle.write_bytes(bundle.sign(federation_key))
        return bundle

    def _config_text(self, origin: str, port: int) -> str:
        layout = self.layout
        lines = [
            f'origin = "{origin}"',
            f'name = "{region_name(origin)}"',
            'data_dir = "data"',
            "",
            "[keys]",
            'signing_key = "keys/signing.key"',
            f'witness_key = "keys/{WITNESS_KEY}"',
            f'pseudonym_key = "{layout.pseudonym_key}"',
            "",
            "[trust]",
            f'bundle = "{layout.bundle}"',
            f'federation_public_key = "{layout.federation_public}"',
            "",
            "[grpc]",
            f'listen = "127.0.0.1:{port}"',
        ]
        if self.tls:
            lines += [
                "",
                "[grpc.tls]",
                'cert = "tls/node.crt"',
                'key = "tls/node.key"',
                f'client_ca = "{layout.ca_dir / "ca.crt"}"',
                "",
                "[access.callers]",
                f'"{GOVERNMENT_CLIENT}" = "government"',
            ]
        return "\n".join(lines) + "\n"

    def publish(self, bundle: TrustBundle) -> None:
        """Sign ``bundle`` with the federation key and put it where every member's node reads it."""
        self.layout.bundle.write_bytes(bundle.sign(SigningKey.load(self.layout.federation_key)))

    def bundle_now(self) -> TrustBundle:
        """The signed bundle as it is on disk, checked against the federation key."""
        return TrustBundle.load_signed(self.layout.bundle, load_public(self.layout.federation_public))

    def config(self, origin: str, **overrides: Any) -> NodeConfig:
        return load_config(self.layout.config_path(origin), **overrides)

    async def start_node(self, origin: str, **overrides: Any) -> Node:
        node = Node(self.config(origin, **overrides))
        await node.start()
        self.nodes[origin] = node
        return node

    async def stop_node(self, origin: str) -> None:
        node = self.nodes.pop(origin, None)
        if node is not None:
            await node.stop()

    async def stop(self) -> None:
        for origin in list(self.nodes):
            await self.stop_node(origin)
