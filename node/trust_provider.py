"""The one place a running node gets its trust bundle from.

Every component that decides something by the bundle (gRPC access, event and
checkpoint verification, which peer topics intake reads, where sync fetches)
asks the provider for the current bundle each time instead of keeping its own
copy, so a refresh takes effect everywhere at once and no component is left on
an old member list. Components that must react to a change (intake's topic
list) subscribe to it.

The version only goes up: a bundle that is not newer than the current one is
refused, while running and, through :meth:`remember`, across restarts (the
highest version and its digest are kept in the node's database, table
``trust_state``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg

from credex.crypto.trust import TrustBundle, TrustBundleError

log = logging.getLogger(__name__)

Listener = Callable[[TrustBundle], None]


class BundleRollback(TrustBundleError):
    """A bundle older than one this node already trusted: refusing it keeps revocations in force."""


class TrustProvider:
    def __init__(self, bundle: TrustBundle) -> None:
        self._bundle = bundle
        self._listeners: list[Listener] = []

    @property
    def current(self) -> TrustBundle:
        return self._bundle

    def __call__(self) -> TrustBundle:
        return self._bundle

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every newer bundle from now on."""
        self._listeners.append(listener)

    def update(self, bundle: TrustBundle) -> None:
        """Switch to ``bundle`` if it is newer; raise :class:`BundleRollback` if it is not."""
        if bundle.version <= self._bundle.version:
            raise BundleRollback(
                f"trust bundle version {bundle.version} is not newer than version {self._bundle.version} "
                "already in force; a federation operator must sign a bundle with a higher version"
            )
        if bundle.federation != self._bundle.federation:
            raise TrustBundleError(
                f"trust bundle is for federation {bundle.federation!r}, this node is in {self._bundle.federation!r}"
            )
        self._bundle = bundle
        log.info("trust bundle version %d in force", bundle.version)
        for listener in self._listeners:
            listener(bundle)

    async def remember(self, pool: asyncpg.Pool, source: str) -> None:
        """Refuse the bundle in force if this node ever trusted a newer one; else record it as the newest.

        Called at start (before anything is served or signed) and after each refresh.
        ``source`` (the bundle's path) goes into the message. Raises :class:`BundleRollback`.
        """
        bundle = self._bundle
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT version, digest, recorded_at FROM trust_state WHERE federation = $1 FOR UPDATE",
                bundle.federation,
            )
            if row is not None:
                known, digest = int(row["version"]), str(row["digest"])
                if bundle.version < known or (bundle.version == known and bundle.digest != digest):
                    what = "an older" if bundle.version < known else "another bundle with the same version as the"
                    raise BundleRollback(
                        f"trust bundle {source} is version {bundle.version} (digest {bundle.digest[:16]}…), "
                        f"{what} one this node already trusted: version {known} (digest {digest[:16]}…) "
                        f"since {row['recorded_at']:%Y-%m-%d %H:%M}. Going back would undo revocations, so the "
                        f"node refuses to start. Put the federation's newest signed bundle (version {known} or "
                        "later) there; if the federation really means to return to older content, its operator "
                        f"signs it again with a version above {known}"
                    )
                if bundle.version == known:
                    return
            await conn.execute(
                "INSERT INTO trust_state (federation, version, digest, issued_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (federation) DO UPDATE SET version = $2, digest = $3, issued_at = $4,"
                " recorded_at = now()",
                bundle.federation,
                bundle.version,
                bundle.digest,
                bundle.issued_at,
            )
        log.info("trust bundle version %d of %s recorded as the newest this node trusts", bundle.version, source)
