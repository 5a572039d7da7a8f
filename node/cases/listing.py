"""ListCases: the cases a caller may see, a page at a time, in filing order, by a cursor.

The order (filing time, then case id) never changes for a case once filed, so a page neither
skips nor repeats a case however many are filed while a caller pages through, and there is no
end to how far a caller may page. The cursor is the last case of a page; one the caller may
not see is refused like a case that does not exist, so a cursor cannot probe for other
callers' cases. Each kind of reader gets a query its index answers (migration 0022).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from credex.node.cases.filing import Viewer
from credex.node.cases.model import invalid
from credex.node.store import Connection


async def page(
    conn: Connection,
    node: str,
    viewer: Viewer,
    today: dt.date,
    state: str = "",
    overdue: bool = False,
    limit: int = 100,
    after: str = "",
) -> tuple[list[Any], str]:
    """One page of ``cases`` rows and the cursor of the next page ("" on the last)."""
    conditions: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if not viewer.sees_all:
        mine = f"(filed_on = {arg(node)} AND filer = {arg(viewer.identity)})"
        if viewer.provider_unit:
            mine = f"({mine} OR provider_unit = {arg(viewer.provider_unit)})"
        conditions.append(mine)
    if state:
        conditions.append(f"state = {arg(state)}")
    if overdue:
        conditions.append(f"closed_at IS NULL AND due_on < {arg(today)}")
    if after:
        start = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", after)
        if start is None or not viewer.may_see(start, node):
            raise invalid(f"after names no case {after[:60]} of yours on this node: pass a next_after given")
        conditions.append(f"(filed_at, case_id) > ({arg(start['filed_at'])}, {arg(after)})")
    where = " AND ".join(conditions) or "TRUE"
    # Only the fixed fragments above are put into the text; every value is a parameter.
    rows = await conn.fetch(
        f"SELECT * FROM cases WHERE {where} ORDER BY filed_at, case_id LIMIT {arg(limit + 1)}", *args
    )
    cursor = rows[limit - 1]["case_id"] if len(rows) > limit else ""
    return list(rows[:limit]), cursor
