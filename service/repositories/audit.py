"""SQL for ``audit_log``: one row per successful write, in the writer's own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from service.db import Database, Work, execute_later
from service.repositories.sql import Where

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


_INSERT_SQL = (
    "INSERT INTO audit_log (ts, level, actor, run_id, scope, event, message, data_json) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _params(entry: AuditEntry, actor: str, ts: str) -> tuple[Any, ...]:
    data = orjson.dumps(entry.data).decode()
    return (ts, entry.level, actor, entry.run_id, entry.scope, entry.event, entry.message, data)


def insert_many(entries: list[AuditEntry], *, actor: str, ts: str) -> Work[None]:
    """Nothing reads an audit row back in the transaction that writes it, so the rows may
    travel with the COMMIT (:func:`~service.db.execute_later`). Usually one entry; a few at
    most (one per thing a write changed)."""
    for entry in entries:
        yield from execute_later(_INSERT_SQL, _params(entry, actor, ts))


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
    where = Where().equal("run_id", run_id).equal("scope", scope).equal("event", event)
    if since is not None:
        where.add("ts >= ?", since)
    if before_id is not None:
        where.add("id < ?", before_id)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM audit_log{where.sql()} ORDER BY id DESC LIMIT ?"
    rows = await db.fetchall(sql, [*where.params, limit + 1])
    items = [_public(row) for row in rows[:limit]]
    return items, (items[-1]["id"] if len(rows) > limit else None)


def _public(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(_COLUMNS, row, strict=True))
    item["data"] = orjson.loads(item.pop("data_json"))
    return item
