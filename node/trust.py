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
``trust_state``). A refresh is checked against that table before it is switched
in, so a replica never runs a bundle older than one another replica recorded.
Where the table is empty (first start, a restored database) there is nothing to
compare with: ``trust.min_version`` is the floor then, and the node says loudly
which version it recorded.

A component that fails to follow a new bundle is logged; the bundle is in force
all the same and the other components are still told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg

from credex.crypto.trust import TrustBundle, TrustBundleError
from credex.node.store import Connection

log = logging.getLogger(__name__)

Listener = Callable[[TrustBundle], None]


class BundleRollback(TrustBundleError):
    """A bundle older than one this node already trusted: refusing it keeps revocations in force."""


class TrustProvider:
    def __init__(self, bundle: TrustBundle, min_version: int = 1, source: str = "the trust bundle") -> None:
        """``min_version`` (setting ``trust.min_version``) is a floor that holds even when the
        database remembers nothing (first start, a restored or replaced database)."""
        self.min_version = min_version
        _check_floor(bundle, min_version, source)
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
        """Switch to ``bundle`` if it is newer; raise :class:`BundleRollback` if it is not.

        Only this process's memory: a running node takes a new bundle through :meth:`adopt`,
        which checks it against the database first.
        """
        self._check_newer(bundle)
        self._switch(bundle)

    async def adopt(self, bundle: TrustBundle, pool: asyncpg.Pool, source: str) -> None:
        """Put a newer ``bundle`` in force: checked against memory and the database, recorded, then switched.

        The database is asked first: if it remembers a newer version (another replica
        took it, or this node did before a restore) :class:`BundleRollback` is raised
        and the bundle in force stays. A database error propagates and nothing changes.
        """
        self._check_newer(bundle)
        async with pool.acquire() as conn, conn.transaction():
            await self._record(conn, bundle, source)
        self._switch(bundle)

    async def remember(self, pool: asyncpg.Pool, source: str) -> None:
        """Refuse the bundle in force if this node ever trusted a newer one; else record it as the newest.

        Called at start (before anything is served or signed). ``source`` (the bundle's
        path) goes into the message. Raises :class:`BundleRollback`.
        """
        async with pool.acquire() as conn, conn.transaction():
            await self._record(conn, self._bundle, source)

    def _check_newer(self, bundle: TrustBundle) -> None:
        if bundle.version <= self._bundle.version:
            raise BundleRollback(
                f"trust bundle version {bundle.version} is not newer than version {self._bundle.version} "
                "already in force; a federation operator must sign a bundle with a higher version"
            )
        if bundle.federation != self._bundle.federation:
            raise TrustBundleError(
                f"trust bundle is for federation {bundle.federation!r}, this node is in {self._bundle.federation!r}"
            )

    def _switch(self, bundle: TrustBundle) -> None:
        """Put ``bundle`` in force and tell every listener; one listener's failure is not the others'."""
        self._bundle = bundle
        log.info("trust bundle version %d in force", bundle.version)
        for listener in self._listeners:
            try:
                listener(bundle)
            except Exception:
                # The bundle is in force whatever a listener does; the rest must hear of it too.
                log.exception(
                    "trust bundle version %d: a component failed to follow it (%r); the others were told",
                    bundle.version,
                    listener,
                )

    async def _record(self, conn: Connection, bundle: TrustBundle, source: str) -> None:
        """Compare ``bundle`` with the newest version the database remembers; record it if newer."""
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
                    f"node refuses it. Put the federation's newest signed bundle (version {known} or "
                    "later) there; if the federation really means to return to older content, its operator "
                    f"signs it again with a version above {known}"
                )
            if bundle.version == known:
                return
        else:
            log.warning(
                "NO TRUST BUNDLE VERSION RECORDED for federation %s (first start, or a new or restored database):"
                " nothing to compare %s with, so its version %d is recorded as the floor and any validly signed"
                " bundle of at least that version is accepted. If this node ever trusted a newer bundle, stop it"
                " and set trust.min_version (now %d) to the federation's newest version so that an older"
                " bundle cannot undo revocations",
                bundle.federation,
                source,
                bundle.version,
                self.min_version,
            )
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


def _check_floor(bundle: TrustBundle, min_version: int, source: str) -> None:
    if bundle.version < min_version:
        raise BundleRollback(
            f"{source} is trust bundle version {bundle.version}, below trust.min_version = {min_version}:"
            " an older bundle may lack revocations, so the node refuses it. Put the federation's newest"
            f" signed bundle (version {min_version} or later) there"
        )
