"""Witnessing: how fast a witness cosigns a log's checkpoints, each one leaf on from the last.

    python -m bench.witness [--checkpoints 2000]

Each add-checkpoint verifies the log's signature and a consistency proof, signs a
cosignature and moves the witness's state by compare-and-set in PostgreSQL. The
rate is printed in process (the witness alone), over the peer channel (the
gRPC edge with mutual TLS and its audit row) and over C2SP tlog-witness's HTTP
wire (the tile server, mutual TLS, one kept-alive connection, audited), beside the raw limit of one core
doing one Ed25519 verification and one signature per checkpoint, measured in the
same run.
"""

from __future__ import annotations

import argparse
import time

import httpx

from bench.common import federation, line, raw_ed25519, run, services, start_node
from credex.crypto.checkpoint import Checkpoint, log_name
from credex.crypto.keys import SigningKey
from credex.crypto.merkle import MerkleTree, leaf_hash
from credex.crypto.tls import client_context
from credex.crypto.trust import WitnessPolicy
from credex.node.channels import open_channel
from credex.node.witness import Witness, wire
from credex.v1 import witness_pb2, witness_pb2_grpc

LOG, WITNESS = "310000", "320000"


async def main(checkpoints: int) -> None:
    signing, verifying = raw_ed25519()
    limit = 1 / (1 / signing + 1 / verifying)
    async with services() as running:
        members = federation(running)
        policy = WitnessPolicy(log=LOG, witnesses=(WITNESS,), quorum=1)
        members.publish(members.bundle_now().with_witness_policy(policy).next_version())
        node = await start_node(members, running, WITNESS)
        try:
            assert node.pool is not None and node.config.keys.witness_key is not None
            key = SigningKey.load(members.layout.member_dir(LOG) / "keys")
            tree = MerkleTree(leaf_hash(i.to_bytes(8, "big")) for i in range(3 * checkpoints + 1))
            notes = [Checkpoint(log_name(LOG), n, tree.root(n)).sign(key).encode() for n in range(3 * checkpoints + 1)]
            proofs = [tree.consistency_proof(n - 1, n) if n > 1 else [] for n in range(3 * checkpoints + 1)]

            witness = Witness(WITNESS, node.pool, members.bundle_now, SigningKey.load(node.config.keys.witness_key))
            started = time.perf_counter()
            for n in range(1, checkpoints + 1):
                outcome = await witness.add_checkpoint(LOG, n - 1, proofs[n], notes[n])
                assert not outcome.conflict
            in_process = checkpoints / (time.perf_counter() - started)

            tls = members.layout.member_dir(LOG) / "tls"
            ca = members.layout.ca_dir / "ca.crt"
            async with open_channel(
                f"127.0.0.1:{node.port}", ca=ca, cert=tls / "node.crt", key=tls / "node.key"
            ) as channel:
                stub = witness_pb2_grpc.WitnessServiceStub(channel)
                started = time.perf_counter()
                for n in range(checkpoints + 1, 2 * checkpoints + 1):
                    response = await stub.AddCheckpoint(
                        witness_pb2.AddCheckpointRequest(
                            origin=LOG, old_size=n - 1, consistency=proofs[n], checkpoint=notes[n]
                        )
                    )
                    assert not response.conflict
                over_grpc = checkpoints / (time.perf_counter() - started)

            assert node.tiles is not None
            context = client_context(ca, tls / "node.crt", tls / "node.key")
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{node.tiles.port}", verify=context) as http:
                started = time.perf_counter()
                for n in range(2 * checkpoints + 1, 3 * checkpoints + 1):
                    answer = await http.post(wire.PATH, content=wire.request_body(n - 1, proofs[n], notes[n]))
                    assert answer.status_code == 200, answer.text
                over_http = checkpoints / (time.perf_counter() - started)
        finally:
            await members.stop()
    print(f"witness: {checkpoints:,} checkpoints each of three ways, one after another")
    line("add-checkpoint in process", in_process, "checkpoints/s", limit, "raw verify+sign")
    line("add-checkpoint over gRPC (mTLS, audited)", over_grpc, "checkpoints/s", limit, "raw verify+sign")
    line("add-checkpoint over HTTP (mTLS, audited)", over_http, "checkpoints/s", limit, "raw verify+sign")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=2000)
    run(main(parser.parse_args().checkpoints))
