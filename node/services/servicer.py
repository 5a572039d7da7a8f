"""What every credex gRPC service answers from, handed over once by the server.

The services differ in what they answer, not in what they answer from: the
node's settings, its store, the trust bundle in force, and the logs with their
checkpoints (any answer may carry a proof). One base holds them, so the server
builds every service the same way and adding one is one line in
:mod:`credex.node.services.server`.
"""

from __future__ import annotations

import asyncpg
import grpc

from credex.crypto.pseudonym import Pseudonymizer
from credex.node.chain import CheckpointKeeper, LogBook
from credex.node.config import NodeConfig
from credex.node.services import edge
from credex.node.trust import TrustProvider


class Servicer:
    """The base of the credex services: what they answer from, and the checks they share."""

    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        trust: TrustProvider,
        logbook: LogBook,
        keeper: CheckpointKeeper,
    ) -> None:
        self.config = config
        self.pool = pool
        self.trust = trust
        self.logbook = logbook
        self.keeper = keeper
        key = config.keys.pseudonym_key
        # A person may be named by ID number in any request (a check, a lookup, an authorization, a
        # stream's filter); every service turns it into the pseudonym with the node's one key.
        self.pseudonymizer = Pseudonymizer.load(key) if key else None

    def member(self, origin: str) -> str:
        """``origin``, if it is a member of the federation in force; else the call is refused NOT_FOUND.

        Every log a node holds is a member's, so asking for any other origin's is a mistake to name.
        """
        if self.trust.current.member(origin) is None:
            raise edge.Refused(grpc.StatusCode.NOT_FOUND, f"origin {origin} is not a member of the federation")
        return origin
