"""SQL for ``audit_log``: one row per successful write, in the writer's own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite
import orjson

from service.db import Database

_COLUMNS = ("id", "ts", "level", "actor", "run_id", "scope", "event", "message", "data_json")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a write wants recorded; the actor and the time are added by whoever writes it."""

    event: str
    scope: str
    message: str
    data: dict[str, Any]
    run_id: str | None = None
    level: str = "info"


async def insert(conn: aiosqlite.Connection, entry: AuditEntry, *, actor: str, ts: str) -> None:
    await conn.execute(
        "INSERT INTO audit_log (ts, level, actor, run_id, scope, event, message, data_json) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (ts, entry.level, actor, entry.run_id, entry.scope, entry.event, entry.message,
         orjson.dumps(entry.data).decode()),
    )  # fmt: skip


async def list_page(
    db: Database,
    *,
    limit: int,
    before_id: int | None = None,
    run_id: str | None = None,
    scope: str | None = None,
    event: str | None = None,
    since: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first, keyset-paged by id. Returns the rows and the id to continue before."""
    where, params = [], []
    for column, value in (("run_id", run_id), ("scope", scope), ("event", event)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await db.fetchall(sql + " ORDER BY id DESC LIMIT ?", [*params, limit + 1])
    items = [_public(row) for row in rows[:limit]]
    return items, (items[-1]["id"] if len(rows) > limit else None)


def _public(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(_COLUMNS, row, strict=True))
    item["data"] = orjson.loads(item.pop("data_json"))
    return item
