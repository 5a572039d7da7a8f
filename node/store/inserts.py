"""Rows of several tables stored by one statement: one round trip, and atomic without BEGIN and COMMIT.

A COPY costs two round trips, and a transaction around several of them two more: a
Check, which stores its audit rows, its ``checks`` row and an answer per subject,
waited for five before it could answer. Here each table's rows travel as one array of
the table's own row type (asyncpg encodes composite values in C), unnested into the
table by a data-modifying CTE, so one prepared statement stores them all, and
PostgreSQL runs that statement as one transaction: all of its rows or none.

COPY stays the better tool for bulk loads (thousands of rows): its rows are parsed
without a plan. For the few to few hundred rows a call's answer stands on, the round
trips are the cost, and the statement's plan is prepared once per connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from credex.node.store.database import Connection


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows for ``table``, each a tuple of ``columns`` in that order; the table's other columns take their defaults."""

    table: str
    columns: tuple[str, ...]
    records: Sequence[tuple[object, ...]]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Inserter:
    """Stores :class:`Rows` of any tables of one database in one statement per call.

    One per database: it remembers each table's columns in their order (a row-type value
    has every column of the table) and the statement made for each shape of call.
    """

    def __init__(self) -> None:
        self._layouts: dict[str, tuple[str, ...]] = {}
        self._statements: dict[tuple[tuple[str, tuple[str, ...]], ...], str] = {}
        self._padders: dict[tuple[str, tuple[str, ...]], itemgetter[Any]] = {}

    async def insert(self, conn: Connection, rows: Sequence[Rows]) -> None:
        """Store every row of ``rows`` or, if the database refuses any of them, none."""
        shape = tuple((r.table, r.columns) for r in rows)
        for table, _ in shape:
            if table not in self._layouts:
                self._layouts[table] = await self._layout(conn, table)
        statement = self._statements.get(shape)
        if statement is None:
            statement = self._statements[shape] = self._statement(shape)
        await conn.execute(statement, *(self._padded(r) for r in rows))

    @staticmethod
    async def _layout(conn: Connection, table: str) -> tuple[str, ...]:
        names = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            _quoted(table),
        )
        if not names:
            raise LookupError(f"no table {table!r} in the database")
        return tuple(str(n["attname"]) for n in names)

    def _statement(self, shape: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
        parts = []
        for number, (table, columns) in enumerate(shape, start=1):
            unknown = set(columns) - set(self._layouts[table])
            if unknown:
                raise LookupError(f"table {table!r} has no column {', '.join(sorted(unknown))}")
            names = ", ".join(_quoted(c) for c in columns)
            parts.append(
                f"INSERT INTO {_quoted(table)} ({names}) SELECT {names} FROM unnest(${number}::{_quoted(table)}[])"
            )
        *first, last = parts
        if not first:
            return last
        return "WITH " + ", ".join(f"t{n} AS ({part})" for n, part in enumerate(first)) + " " + last

    def _padded(self, rows: Rows) -> list[tuple[object, ...]]:
        """Each record as a value of the table's row type: its columns in the table's order, None for the rest."""
        key = (rows.table, rows.columns)
        pad = self._padders.get(key)
        if pad is None:
            missing = len(rows.columns)  # the index of the None appended to each record
            where = {c: i for i, c in enumerate(rows.columns)}
            pad = self._padders[key] = itemgetter(*(where.get(a, missing) for a in self._layouts[rows.table]))
        extra = (None,)
        return [pad(record + extra) for record in rows.records]
