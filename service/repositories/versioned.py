"""Project-scoped rows with a ``version`` column: generic insert, get, update, delete, list.

Every table of the projects domain has the same shape of access: rows belong to one project,
are addressed by (project_id, id), change only if the caller saw the newest version, and are
listed newest-first or by an indexed column with a keyset cursor. One implementation, many
:class:`Table` descriptions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.db import Database, Work, execute, query, query_one
from service.repositories.sql import Where


class VersionMismatch(Exception):
    """The row exists but its version is not the one the caller based the change on."""

    def __init__(self, current: int):
        super().__init__(f"the current version is {current}")
        self.current = current


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]  # in API order; includes id, project_id, version, timestamps
    json_columns: frozenset[str] = frozenset()  # stored as "<name>_json" text
    bool_columns: frozenset[str] = frozenset()
    to_db: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    from_db: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    sortable: frozenset[str] = frozenset({"created_at"})
    scoped: bool = True  # rows belong to a project (False for projects, debug metadata)
    id_column: str = "id"  # the key (debugger_state: session_id)
    sql_names: Mapping[str, str] = field(default_factory=dict)  # e.g. user -> "user" (quoted)

    def key(self, project_id: str | None, row_id: str) -> tuple[str, list[Any]]:
        """WHERE clause and parameters that address one row (inside its project)."""
        if self.scoped:
            return f"project_id = ? AND {self.id_column} = ?", [project_id, row_id]
        return f"{self.id_column} = ?", [row_id]

    def db_column(self, column: str) -> str:
        if column in self.sql_names:
            return self.sql_names[column]
        return f"{column}_json" if column in self.json_columns else column

    @property
    def select(self) -> str:
        return ", ".join(self.db_column(c) for c in self.columns)

    def encode(self, column: str, value: Any) -> Any:
        if value is None:
            return None
        if column in self.json_columns:
            return orjson.dumps(value).decode()
        if column in self.to_db:
            return self.to_db[column](value)
        return value

    def decode_row(self, row: Sequence[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column, value in zip(self.columns, row, strict=True):
            if value is not None and column in self.json_columns:
                value = orjson.loads(value)
            elif column in self.bool_columns:
                value = bool(value)
            elif value is not None and column in self.from_db:
                value = self.from_db[column](value)
            out[column] = value
        return out


def insert(
    table: Table, values: Mapping[str, Any], *, on_conflict_skip: bool = False
) -> Work[dict[str, Any] | None]:
    """Insert one row; with ``on_conflict_skip`` an existing id is left alone (returns None).

    Raises :class:`~service.db.UniqueViolation` for a taken id and
    :class:`~service.db.ForeignKeyViolation` for a missing parent (the project, say).
    """
    names = [c for c in table.columns if c in values]
    sql = (
        f"INSERT INTO {table.name} ({', '.join(table.db_column(c) for c in names)}) "
        f"VALUES ({', '.join('?' * len(names))})"
    )
    if on_conflict_skip:
        sql += " ON CONFLICT (id) DO NOTHING"
    params = [table.encode(c, values[c]) for c in names]
    rows = yield from query(sql + f" RETURNING {table.select}", params)
    return table.decode_row(rows[0]) if rows else None


def get(table: Table, project_id: str | None, row_id: str) -> Work[dict[str, Any] | None]:
    where, params = table.key(project_id, row_id)
    row = yield from query_one(f"SELECT {table.select} FROM {table.name} WHERE {where}", params)
    return table.decode_row(row) if row else None


def update(
    table: Table,
    project_id: str | None,
    row_id: str,
    changes: Mapping[str, Any],
    *,
    expected_version: Collection[int] | None,
    now: str,
) -> Work[dict[str, Any] | None]:
    """Apply ``changes`` if the row is still at one of ``expected_version`` (None: any).

    Returns the new row, None when there is no such row in the project, and raises
    :class:`VersionMismatch` when another writer got there first. The version check is in the
    UPDATE itself, so two writers holding the same version cannot both win.
    """
    sets = [f"{table.db_column(c)} = ?" for c in changes]
    params = [table.encode(c, v) for c, v in changes.items()]
    if "updated_at" in table.columns:
        sets.append("updated_at = ?")
        params.append(now)
    where, key_params = table.key(project_id, row_id)
    sql = f"UPDATE {table.name} SET {', '.join([*sets, 'version = version + 1'])} WHERE {where}"
    params += key_params
    if expected_version is not None:
        sql += _version_in(expected_version)
        params += sorted(expected_version)
    rows = yield from query(sql + f" RETURNING {table.select}", params)
    if rows:
        return table.decode_row(rows[0])
    current = yield from get(table, project_id, row_id)
    if current is None:
        return None
    raise VersionMismatch(current["version"])


def delete(
    table: Table,
    project_id: str | None,
    row_id: str,
    *,
    expected_version: Collection[int] | None,
) -> Work[bool]:
    """Delete; False when absent; :class:`VersionMismatch` when the version moved on."""
    where, params = table.key(project_id, row_id)
    sql = f"DELETE FROM {table.name} WHERE {where}"
    if expected_version is not None:
        sql += _version_in(expected_version)
        params += sorted(expected_version)
    if (yield from execute(sql, params)):
        return True
    current = yield from get(table, project_id, row_id)
    if current is None:
        return False
    raise VersionMismatch(current["version"])


def _version_in(versions: Collection[int]) -> str:
    """The version check of an optimistic write: one of the ETags If-Match named."""
    return f" AND version IN ({', '.join('?' * len(versions))})"


@dataclass(frozen=True, slots=True)
class Sort:
    column: str = "created_at"
    descending: bool = False

    @classmethod
    def parse(cls, text: str) -> Sort:
        return cls(text.removeprefix("-"), text.startswith("-"))


async def list_page(
    db: Database,
    table: Table,
    project_id: str | None,
    *,
    limit: int,
    sort: Sort = Sort(),
    after: Sequence[Any] | None = None,
    filters: Mapping[str, Any] | None = None,
    at_least: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """One page ordered by (sort column, id), continuing after the keyset position ``after``.
    ``filters``: column -> the value it must equal; ``at_least``: column -> its lower bound
    (absent or None values do not filter).

    Returns the rows and the position to continue after, or None on the last page. Row-value
    comparisons keep the range on the (project_id, column, id) indexes; both SQLite and
    PostgreSQL support them.
    """
    if sort.column not in table.sortable:
        raise ValueError(f"cannot sort {table.name} by {sort.column}")
    where = Where()
    if table.scoped:
        where.add("project_id = ?", project_id)
    for column, value in (filters or {}).items():
        where.equal(table.db_column(column), table.encode(column, value))
    for column, value in (at_least or {}).items():
        if value is not None:
            where.add(f"{table.db_column(column)} >= ?", table.encode(column, value))
    op, direction = (">", "ASC") if not sort.descending else ("<", "DESC")
    if after is not None:
        where.add(f"({sort.column}, id) {op} (?, ?)", table.encode(sort.column, after[0]), after[1])
    sql = (
        f"SELECT {table.select} FROM {table.name}{where.sql()} "
        f"ORDER BY {sort.column} {direction}, id {direction} LIMIT ?"
    )
    rows = await db.fetchall(sql, [*where.params, limit + 1])
    items = [table.decode_row(r) for r in rows[:limit]]
    if len(rows) <= limit:
        return items, None
    last = items[-1]
    return items, [last[sort.column], last["id"]]
