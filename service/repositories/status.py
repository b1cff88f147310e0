"""SQL for the ``status`` table.

Column names are interpolated into SQL only from :data:`STATUS_FIELDS` (a whitelist checked
by the schema), never from raw input; values always go through parameters.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
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
    """Row count, kept up to date cheaply (see ``CommitCache`` and :class:`Tally`).

    ``count(*)`` walks a whole index: 5.5 ms at 100k rows, growing with the table, far more
    than the page it accompanies; and under a steady stream of writes every commit made it
    stale (the soak's latency grew with the table). So a stale count is brought forward by
    counting only the rows past an id below which nothing more can appear (ids only grow,
    and the API never deletes status rows), and the full count runs only as often as the
    backend's ``derived_full_recompute_s`` says (what a refresh cannot see: operators'
    deletes, and on PostgreSQL a transaction that held an id longer than ``ids_settle_s``).
    """
    tally: Tally = await db.derived.get(
        ("status.count", version),
        partial(_count, db, version),
        partial(_count_since, db, version),
    )
    return tally.total


@dataclass(frozen=True, slots=True)
class Tally:
    """A count of status rows in two parts: ``settled`` rows with ids up to ``settled_id``,
    counted once and trusted, and ``tail`` rows past it, recounted on every refresh (a short
    index range).

    Why two parts: on PostgreSQL ids are taken at INSERT and become visible at COMMIT, so a row
    with an id below the largest one seen may still appear (its transaction was slower).
    Counting only past the largest id seen would miss it until the next full count. So the
    settled part moves up only to an id seen ``ids_settle_s`` ago (``mark``, seen at
    ``marked_at``): every transaction that took an id up to it has ended by then.

    A first count cannot tell which ids below its largest were still in flight, so the cache
    computes it afresh ``ids_settle_s`` later (``CommitCache``'s ``confirm_first_s``), when
    that largest id has settled. Every later full count recounts the settled part up to the
    settled id of the value it replaces (catching deletes and the rare transaction that
    outlived ``ids_settle_s``) and the tail past it, so it needs no second look. On SQLite ids
    become visible in the order they are taken: ``ids_settle_s`` is 0, the settled part
    follows every refresh, and a full count is one plain ``count(*)``.
    """

    settled: int
    settled_id: int
    tail: int = 0
    mark: int = 0
    marked_at: float = 0.0

    @property
    def total(self) -> int:
        return self.settled + self.tail


async def _count(db: Database, version: str | None, previous: Tally | None) -> Tally:
    if previous is not None and db.ids_settle_s > 0:
        settled = await _count_up_to(db, version, previous.settled_id)
        return await _count_since(db, version, replace(previous, settled=settled))
    where = Where().equal("version", version)
    sql = f"SELECT count(*), coalesce(max(id), 0) FROM status{where.sql()}"
    row = await db.fetchone(sql, where.params, operation="status.count")
    counted, newest = (int(row[0]), int(row[1])) if row else (0, 0)
    return Tally(counted, newest, mark=newest, marked_at=time.monotonic())


async def _count_since(db: Database, version: str | None, old: Tally) -> Tally:
    settle_s, now = db.ids_settle_s, time.monotonic()
    settled, settled_id = old.settled, old.settled_id
    if settle_s <= 0:  # ids visible in the order taken: everything counted is settled
        added, newest = await _count_past(db, version, settled_id)
        return Tally(settled + added, max(settled_id, newest))
    mark, marked_at = old.mark, old.marked_at
    if mark > settled_id and now - marked_at >= settle_s:
        settled += await _count_range(db, version, settled_id, mark)
        settled_id = mark
    # Counted after the settled part moved, so that a row is in exactly one of the two.
    tail, newest = await _count_past(db, version, settled_id)
    if mark <= settled_id:
        mark, marked_at = max(newest, settled_id), now
    return Tally(settled, settled_id, tail, mark, marked_at)


async def _count_up_to(db: Database, version: str | None, up_to: int) -> int:
    """The whole settled part counted afresh: a walk of the table, once per full count."""
    where = Where().equal("version", version).add("id <= ?", up_to)
    sql = f"SELECT count(*) FROM status{where.sql()}"
    row = await db.fetchone(sql, where.params, operation="status.count_up_to")
    return int(row[0]) if row else 0


async def _count_past(db: Database, version: str | None, after_id: int) -> tuple[int, int]:
    sql, params = count_since_query(version, after_id)
    row = await db.fetchone(sql, params, operation="status.count_since")
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def _count_range(db: Database, version: str | None, after_id: int, up_to: int) -> int:
    where = Where().equal("version", version).add("id > ?", after_id).add("id <= ?", up_to)
    sql = f"SELECT count(*) FROM status{where.sql()}"
    row = await db.fetchone(sql, where.params, operation="status.count_settled")
    return int(row[0]) if row else 0


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
