"""前置库 polling: read a platform's staging tables incrementally, by (update time, id).

The connection is read-only (the node never writes to a platform's database).
Each poll reads the rows strictly after the watermark in (update time, id)
order, so a row updated at the source comes round again with a later update
time and becomes a correction of its record.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from credex.errors import CredexError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TableUnavailable(CredexError):
    """The source table cannot be read as configured."""


@dataclass(frozen=True, slots=True)
class Watermark:
    update_time: dt.datetime
    id: int

    def to_json(self) -> dict[str, Any]:
        return {"update_time": self.update_time.isoformat(), "id": self.id}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Watermark:
        if not data:
            return cls(EPOCH, 0)
        return cls(dt.datetime.fromisoformat(data["update_time"]), int(data["id"]))


@dataclass(frozen=True)
class TableSource:
    table: str
    update_column: str = "update_time"
    id_column: str = "id"

    def __post_init__(self) -> None:
        for name in (self.table, self.update_column, self.id_column):
            if not _IDENTIFIER.match(name):
                raise TableUnavailable(f"{name!r} is not a plain SQL identifier")

    async def poll(self, conn: asyncpg.Connection, after: Watermark, limit: int) -> list[dict[str, Any]]:
        query = (
            f"SELECT * FROM {self.table} WHERE ({self.update_column}, {self.id_column}) > ($1, $2)"
            f" ORDER BY {self.update_column}, {self.id_column} LIMIT $3"
        )
        try:
            rows = await conn.fetch(query, _naive_if_needed(after.update_time), after.id, limit)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise TableUnavailable(f"{self.table}: {exc}") from exc
        return [dict(row) for row in rows]

    def watermark(self, row: dict[str, Any]) -> Watermark:
        stamp = row[self.update_column]
        if isinstance(stamp, dt.datetime) and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return Watermark(stamp, int(row[self.id_column]))


def _naive_if_needed(value: dt.datetime) -> dt.datetime:
    # Staging tables often use "timestamp without time zone"; compare as UTC wall time.
    return value.astimezone(dt.UTC).replace(tzinfo=None)


async def open_read_only(dsn: str, timeout: float = 10.0) -> asyncpg.Connection:
    """A read-only connection whose connect and every query give up after ``timeout`` seconds."""
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=timeout,
            command_timeout=timeout,
            server_settings={"default_transaction_read_only": "on"},
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise TableUnavailable(f"cannot reach the 前置库: {exc}") from exc
    return conn
