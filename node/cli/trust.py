"""``credex keys``, ``tls`` and ``trust``: signing keys, TLS material, and the federation's trust bundle."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer

from credex.crypto.keys import SigningKey, key_id, load_public, public_raw
from credex.crypto.pseudonym import Pseudonymizer
from credex.crypto.tls import CertificateAuthority, spki_sha256
from credex.crypto.trust import Member, MemberKey, TrustBundle, WitnessPolicy
from credex.node.cli.app import console, err, fail, keys_app, tls_app, trust_app


@keys_app.command("init")
def keys_init(
    directory: Annotated[Path, typer.Option("--dir", help="where to write signing.key and signing.pub")],
) -> None:
    """Create an Ed25519 signing key (refuses to overwrite one)."""
    key = SigningKey.generate()
    path = key.save(directory)
    console.print(f"wrote {path} (mode 0600) and {directory / 'signing.pub'}")
    console.print(f"key id {key.key_id}")


@keys_app.command("pseudonym")
def keys_pseudonym(out: Annotated[Path, typer.Option(help="file for the federation-wide pseudonym key")]) -> None:
    """Create the key that turns ID numbers into pseudonyms (share it with every member, secretly)."""
    try:
        Pseudonymizer.create(out)
    except FileExistsError:
        raise fail(f"{out} already exists; every member must use the same key, so it is never replaced") from None
    console.print(f"wrote {out} (mode 0600)")


@tls_app.command("ca")
def tls_ca(
    directory: Annotated[Path, typer.Option("--dir", help="where to write ca.crt and ca.key")],
    name: Annotated[str, typer.Option(help="the CA's common name")] = "credex federation CA",
) -> None:
    """Create the federation CA that issues node and client certificates."""
    if (directory / "ca.key").exists():
        raise fail(f"{directory / 'ca.key'} already exists")
    cert, key = CertificateAuthority.create(name).write(directory)
    console.print(f"wrote {cert} and {key} (mode 0600)")


@tls_app.command("issue")
def tls_issue(
    ca_dir: Annotated[Path, typer.Option(help="folder of ca.crt and ca.key")],
    name: Annotated[str, typer.Option(help="common name: a member's origin code, or a caller's identity")],
    out_dir: Annotated[Path, typer.Option(help="where to write node.crt, node.key and ca.crt")],
    host: Annotated[list[str] | None, typer.Option(help="DNS name or IP the certificate serves (repeatable)")] = None,
) -> None:
    """Issue a certificate (server and client use) under the federation CA."""
    try:
        ca = CertificateAuthority.load(ca_dir)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot load the CA from {ca_dir}: {exc}") from None
    cert, _ = ca.issue(name, host or []).write(out_dir, "node")
    (out_dir / "ca.crt").write_bytes(ca.cert_pem)
    console.print(f"wrote {cert} for {name} ({', '.join(host or []) or 'no hosts'})")


@trust_app.command("new")
def trust_new(
    draft: Annotated[Path, typer.Argument(help="draft bundle to create (JSON)")],
    federation: Annotated[str, typer.Option(help="federation name")],
    tls_ca: Annotated[Path | None, typer.Option(help="PEM of the federation CA")] = None,
) -> None:
    """Start an unsigned bundle draft."""
    if draft.exists():
        raise fail(f"{draft} exists")
    bundle = TrustBundle(federation=federation, tls_ca=tls_ca.read_text() if tls_ca else "")
    draft.write_bytes(bundle.to_json())
    console.print(f"wrote draft {draft}")


@trust_app.command("add-member")
def trust_add_member(
    draft: Annotated[Path, typer.Argument()],
    origin: Annotated[str, typer.Option(help="GB/T 2260 code")],
    name: Annotated[str, typer.Option()],
    endpoint: Annotated[str, typer.Option(help="host:port of its gRPC server")],
    public_key: Annotated[list[Path], typer.Option("--public-key", help="signing.pub (repeatable)")],
    tls_cert: Annotated[
        Path | None, typer.Option(help="the member's node certificate (node.crt): only its key gets peer rights")
    ] = None,
    witness_key: Annotated[
        Path | None,
        typer.Option(
            help="the public half of the key the member's node cosigns peers' checkpoints with as a witness"
            " (its node.toml's keys.witness_key); a key of its own, not a signing key"
        ),
    ] = None,
    witness_url: Annotated[
        str | None,
        typer.Option(
            help="https://host:port where its witness takes C2SP tlog-witness add-checkpoint (its node's"
            " tiles_listen); logs then ask it over HTTP. An empty string: over gRPC at --endpoint (the default)"
        ),
    ] = None,
) -> None:
    """Add a member, or update one, in a draft; bump the version.

    A member's keys already in the draft are kept, with their revocations: a key
    is never dropped (its old events must stay verifiable), only revoked with
    `credex trust revoke-key`.
    """
    try:
        bundle = TrustBundle.from_draft(draft)
        existing = bundle.member(origin)
        keys = list(existing.keys) if existing else []
        for path in public_key:
            raw = public_raw(load_public(path))
            if key_id(raw) not in {k.key_id for k in keys}:
                keys.append(MemberKey(key_id=key_id(raw), public_key=base64.b64encode(raw).decode()))
        spki = spki_sha256(tls_cert.read_bytes()) if tls_cert else (existing.tls_spki_sha256 if existing else "")
        witness = existing.witness_key if existing else ""
        if witness_key is not None:
            witness = base64.b64encode(public_raw(load_public(witness_key))).decode()
            signing = {k.public_key for k in keys} | {k.public_key for m in bundle.members for k in m.keys}
            if witness in signing:
                raise ValueError("the witness key must not be a member's signing key: create one of its own")
            if clash := bundle.without_member(origin).witness_key_clash(
                Member(origin=origin, name=name, witness_key=witness)
            ):
                raise ValueError(f"{clash}; a witness counts once towards a quorum: create one of its own")
        url = (existing.witness_url if existing else "") if witness_url is None else witness_url
        member = Member(
            origin=origin,
            name=name,
            endpoint=endpoint,
            keys=tuple(keys),
            tls_spki_sha256=spki,
            witness_key=witness,
            witness_url=url,
        )
    except OSError as exc:
        raise fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:  # CertificateError among them
        raise fail(str(exc)) from None
    bundle = bundle.with_member(member).next_version()
    draft.write_bytes(bundle.to_json())
    console.print(f"{origin} {name} in {draft} (version {bundle.version})")
    if not spki:
        err.print(
            f"[yellow]warning:[/] no --tls-cert: calls from {origin} get no peer rights until its node certificate"
            " is bound"
        )


@trust_app.command("revoke-key")
def trust_revoke_key(
    draft: Annotated[Path, typer.Argument()],
    origin: Annotated[str, typer.Option(help="the member whose key it is")],
    key_id_: Annotated[str, typer.Option("--key-id", help="the key id (`credex trust verify` lists them)")],
    after_seq: Annotated[
        int,
        typer.Option(
            help="the key vouches for nothing of the origin's log beyond this seq: give the size of the last"
            " checkpoint of that origin the federation has verified (`credex audit` prints it)",
            min=0,
        ),
    ],
    reason: Annotated[str, typer.Option(help="why (kept in the bundle)")],
    root: Annotated[
        str,
        typer.Option(
            help="hex Merkle root of the origin's log at --after-seq: the root `credex audit` prints for that"
            " size, or of the last checkpoint the federation verified. Every node compares its copy with it and"
            " raises an alarm naming the key if it holds other (forged) events up to there",
        ),
    ] = "",
) -> None:
    """Revoke a member's key by log position, in a draft; bump the version.

    Events of the origin after seq N and checkpoints larger than N signed with the key
    are rejected everywhere, whatever time their signer wrote into them. With --root,
    a node that took in history forged with the key up to N notices it.
    """
    try:
        bundle = TrustBundle.from_draft(draft)
        bundle = bundle.with_key_revoked(origin, key_id_, after_seq, reason, root.strip().lower()).next_version()
    except ValueError as exc:  # a --root that is not hex, a seq below the last
        raise fail(str(exc)) from None
    draft.write_bytes(bundle.to_json())
    console.print(f"key {key_id_} of {origin} revoked after seq {after_seq} in {draft} (version {bundle.version})")
    if not root:
        err.print(
            "[yellow]warning:[/] no --root: a node that takes in events forged with this key up to seq"
            f" {after_seq} (one new or catching up) will not notice; give the log's root at {after_seq}"
        )
    member = bundle.member(origin)
    if member is not None and all(k.revoked for k in member.keys):
        err.print(f"[yellow]warning:[/] {origin} has no unrevoked key left; add its new one with add-member")


@trust_app.command("witnesses")
def trust_witnesses(
    draft: Annotated[Path, typer.Argument()],
    log: Annotated[str, typer.Option(help="the origin whose log is witnessed")],
    witness: Annotated[list[str], typer.Option("--witness", help="a member that witnesses it (repeatable)")],
    quorum: Annotated[int, typer.Option(help="how many of them must cosign a checkpoint", min=1)],
) -> None:
    """Say who witnesses a log and how many cosignatures its checkpoints need, in a draft; bump the version.

    From then on a proof of that log verifies (``credex verify``) only if its checkpoint
    carries that many valid cosignatures of the witnesses named.
    """
    try:
        bundle = TrustBundle.from_draft(draft)
        policy = WitnessPolicy(log=log, witnesses=tuple(witness), quorum=quorum)
        bundle = bundle.with_witness_policy(policy).next_version()
    except ValueError as exc:
        raise fail(str(exc)) from None
    unknown = [w for w in (log, *witness) if bundle.member(w) is None]
    if unknown:
        raise fail(f"not members of the draft: {', '.join(unknown)}; add them with add-member first")
    draft.write_bytes(bundle.to_json())
    console.print(f"{log} witnessed by {', '.join(witness)}, {quorum} needed, in {draft} (version {bundle.version})")
    unkeyed = [w for w in witness if bundle.witness_key(w) is None]
    if unkeyed:
        err.print(
            f"[yellow]warning:[/] no witness key for {', '.join(unkeyed)}: give it with add-member --witness-key,"
            " or their cosignatures count for nothing"
        )


@trust_app.command("sign")
def trust_sign(
    draft: Annotated[Path, typer.Argument()],
    key: Annotated[Path, typer.Option(help="the federation's signing key")],
    out: Annotated[Path, typer.Option(help="signed bundle to write")],
) -> None:
    """Sign a draft with the federation key."""
    bundle = TrustBundle.from_draft(draft)
    signer = SigningKey.load(key)
    out.write_bytes(bundle.sign(signer))
    console.print(f"signed {out}: version {bundle.version}, {len(bundle.members)} members, key {signer.key_id}")


@trust_app.command("verify")
def trust_verify(
    signed: Annotated[Path, typer.Argument()],
    federation_key: Annotated[Path, typer.Option(help="the federation's public key")],
) -> None:
    """Check a signed bundle and list its members."""
    bundle = TrustBundle.load_signed(signed, load_public(federation_key))
    console.print(f"OK: {bundle.federation} version {bundle.version}, issued {bundle.issued_at:%Y-%m-%d %H:%M}")
    for member in bundle.members:
        keys = ", ".join(k.key_id + (f" ({k.revocation()})" if k.revoked else "") for k in member.keys)
        tls = f"tls {member.tls_spki_sha256[:16]}…" if member.tls_spki_sha256 else "[yellow]no tls binding[/]"
        console.print(f"  {member.origin} {member.name} {member.endpoint} {tls} keys: {keys}", soft_wrap=True)
    for policy in bundle.witness_policies:
        console.print(f"  {policy.log} witnessed by {', '.join(policy.witnesses)}: {policy.quorum} needed")
