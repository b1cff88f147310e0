"""SQL for the ``status`` table.

Column names are interpolated into SQL only from :data:`STATUS_FIELDS` (a whitelist checked
by the schema), never from raw input; values always go through parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from service.db import Database, Work, execute_many, query, query_one
from service.repositories.sql import Where

# The columns of a status record, in API order. The schema validates ``fields=`` against it.
STATUS_FIELDS: tuple[str, ...] = (
    "id",
    "uptime",
    "version",
    "latency",
    "error_rate",
    "last_run",
    "blocks",
    "runbook_link",
    "dashboard_link",
    "created_at",
    "updated_at",
)

WRITABLE_FIELDS: tuple[str, ...] = tuple(f for f in STATUS_FIELDS if f != "id")
_INSERT_SQL = (
    f"INSERT INTO status ({', '.join(WRITABLE_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(WRITABLE_FIELDS))}) RETURNING {', '.join(STATUS_FIELDS)}"
)
_INSERT_WITH_ID_SQL = (
    f"INSERT INTO status ({', '.join(STATUS_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(STATUS_FIELDS))})"
)


_ALL_COLUMNS = ", ".join(STATUS_FIELDS)


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of one page (shared between concurrent identical requests: read-only) and the
    id to continue after, or ``None`` on the last page."""

    items: list[dict[str, Any]]
    next_after_id: int | None


async def list_page(
    db: Database,
    *,
    limit: int,
    columns: Sequence[str] = STATUS_FIELDS,
    after_id: int | None = None,
    offset: int = 0,
    version: str | None = None,
) -> Page:
    """One page ordered by id: keyset (``after_id``) when given, else ``offset``."""
    key = ("status.list_page", limit, tuple(columns), after_id, offset, version)
    fetch = partial(_fetch_page, db, limit, tuple(columns), after_id, offset, version)
    page: Page = await db.shared_reads.run(key, fetch)
    return page


async def _fetch_page(
    db: Database,
    limit: int,
    columns: tuple[str, ...],
    after_id: int | None,
    offset: int,
    version: str | None,
) -> Page:
    # id is always selected: the cursor of the next page needs it.
    selected = columns if "id" in columns else ("id", *columns)
    where = Where().equal("version", version)
    if after_id is not None:
        where.add("id > ?", after_id)
    sql = f"SELECT {', '.join(selected)} FROM status{where.sql()} ORDER BY id LIMIT ? OFFSET ?"
    rows = await db.fetchall(sql, [*where.params, limit + 1, offset])  # +1: is there more?
    next_after_id = rows[limit - 1][0] if len(rows) > limit else None
    if "id" in columns:
        items = [dict(zip(columns, row, strict=True)) for row in rows[:limit]]
    else:
        items = [dict(zip(columns, row[1:], strict=True)) for row in rows[:limit]]
    return Page(items, next_after_id)


async def count(db: Database, *, version: str | None = None) -> int:
    """Row count, kept up to date cheaply (see ``CommitCache``).

    ``count(*)`` walks a whole index: 5.5 ms at 100k rows, growing with the table, far more
    than the page it accompanies; and under a steady stream of writes every commit made it
    stale (the soak's latency grew with the table). So a stale count is brought forward with
    the rows whose id is past the largest one counted (ids only grow, and the API never
    deletes status rows), and the full count runs only as often as the backend's
    ``derived_full_recompute_s`` says (what a refresh cannot see: operators' deletes, and on
    PostgreSQL ids that commit out of order).
    """
    counted: int
    counted, _ = await db.derived.get(
        ("status.count", version),
        partial(_count, db, version),
        partial(_count_since, db, version),
    )
    return counted


async def _count(db: Database, version: str | None) -> tuple[int, int]:
    where = Where().equal("version", version)
    sql = f"SELECT count(*), coalesce(max(id), 0) FROM status{where.sql()}"
    row = await db.fetchone(sql, where.params)
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def _count_since(db: Database, version: str | None, old: tuple[int, int]) -> tuple[int, int]:
    counted, max_id = old
    sql, params = count_since_query(version, max_id)
    row = await db.fetchone(sql, params)
    added, newest = (int(row[0]), int(row[1])) if row else (0, 0)
    return counted + added, max(max_id, newest)


def count_since_query(version: str | None, max_id: int) -> tuple[str, list[Any]]:
    """The count and largest id of the rows past ``max_id``.

    Bounded on both sides so that a planner without statistics (PostgreSQL with autovacuum
    off, or a generic plan) still walks the index range: against ``id > ?`` alone it guessed a
    third of the table and scanned all of it, 15-34 ms on every commit (the soak of 2026-11-30
    found one backend doing that all the time); the pair it estimates at 0.5 %.
    """
    where = Where().equal("version", version).add("id > ?", max_id)
    where.add("id <= (SELECT max(id) FROM status)")
    return f"SELECT count(*), coalesce(max(id), 0) FROM status{where.sql()}", where.params


async def get(
    db: Database, status_id: int, columns: Sequence[str] = STATUS_FIELDS
) -> dict[str, Any] | None:
    """One record by id. Concurrent calls share one ``IN (...)`` query (see BatchedLookup)."""
    record = await db.lookup(_fetch_by_ids).get(status_id)
    if record is None or len(columns) == len(STATUS_FIELDS):
        return record
    return {c: record[c] for c in columns}


async def _fetch_by_ids(db: Database, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    marks = ", ".join("?" * len(ids))
    rows = await db.fetchall(f"SELECT {_ALL_COLUMNS} FROM status WHERE id IN ({marks})", ids)
    return {row[0]: dict(zip(STATUS_FIELDS, row, strict=True)) for row in rows}


def insert(values: dict[str, Any], now: str) -> Work[dict[str, Any]]:
    """Insert one record (the database assigns the id) and return it as stored."""
    record = {**values, "created_at": now, "updated_at": now}
    rows = yield from query(_INSERT_SQL, [record.get(f) for f in WRITABLE_FIELDS])
    return dict(zip(STATUS_FIELDS, rows[0], strict=True))


def insert_many_with_ids(rows: Iterable[Sequence[Any]]) -> Work[int]:
    """Batch insert of complete rows (id first, in :data:`STATUS_FIELDS` order); ``rows`` may
    be a lazy iterator, consumed as the insert runs."""
    return (yield from execute_many(_INSERT_WITH_ID_SQL, rows))


def row_count_and_max_id() -> Work[tuple[int, int]]:
    row = yield from query_one("SELECT count(*), coalesce(max(id), 0) FROM status")
    assert row is not None
    return int(row[0]), int(row[1])
