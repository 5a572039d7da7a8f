"""The ``credex`` command line: ``python -m credex.node.cli`` or the ``credex`` script.

One module per command group, each adding its commands to the app of
:mod:`.app` (which holds the shared options and the one error boundary):
:mod:`.node` (demo, node run, health), :mod:`.ingest` (ingest, synth),
:mod:`.profiles` (profile list, check), :mod:`.lookup` (lookup, proof, verify,
audit), :mod:`.trust` (keys, tls, trust), :mod:`.alarms`, :mod:`.quality`,
:mod:`.measures` (measures list, check), :mod:`.revocation` (revoke, hide, unhide, expire).
"""

import contextlib
import os
import sys

# gRPC's core logs a failed TLS handshake on stderr itself; the command says what it means
# in one line, so keep the core to errors unless the operator asks (set before grpc loads).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from credex.node.cli import (
    alarms,
    cases,
    checks,
    ingest,
    lookup,
    measures,
    node,
    profiles,
    quality,
    reports,
    revocation,
    risk,
    subscriptions,
    trust,
)
from credex.node.cli.app import app

# imported for their commands
_COMMAND_GROUPS = (
    node,
    ingest,
    profiles,
    lookup,
    trust,
    alarms,
    quality,
    measures,
    checks,
    revocation,
    reports,
    cases,
    subscriptions,
    risk,
)


def main() -> None:
    """The console script: the app, quiet when its output pipe closes early (``credex … | head``)."""
    with contextlib.suppress(BrokenPipeError):
        app()
    sys.stdout.flush()


__all__ = ["app", "main"]
