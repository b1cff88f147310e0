"""SQL for the ``documents`` table (the database copy of persona and prompt files)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from service.db import Database, Work, execute_many, query
from service.db.search import ranked_matches
from service.domain.documents import ParsedDocument
from service.repositories.sql import Where

COLUMNS = (
    "id",
    "type",
    "name",
    "document",
    "file_path",
    "file_modified",
    "content_hash",
    "created_at",
    "updated_at",
)
_SELECT = ", ".join(COLUMNS)
JSON_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3}")


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the sync compares a file with."""

    id: str
    content_hash: str
    file_modified: str


def decode(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(COLUMNS, row, strict=True))
    record["document"] = orjson.loads(record["document"])
    return record


def states(paths: Iterable[str] | None = None) -> Work[dict[str, StoredState]]:
    """Stored path, id, hash and file time of every document, or of those at ``paths``."""
    sql = "SELECT file_path, id, content_hash, file_modified FROM documents"
    wanted = None if paths is None else sorted(set(paths))
    if wanted is None:
        rows = yield from query(sql)
    elif not wanted:
        return {}
    else:
        rows = yield from query(
            f"{sql} WHERE file_path IN ({', '.join('?' * len(wanted))})", wanted
        )
    return {r[0]: StoredState(r[1], r[2], r[3]) for r in rows}


def upsert_many(docs: Iterable[ParsedDocument], now: str) -> Work[int]:
    """Insert new documents and replace changed ones (same id), keeping ``created_at``."""
    params = [
        (
            d.id,
            str(d.type),
            d.name,
            orjson.dumps(d.document).decode(),
            d.file_path,
            d.file_modified,
            d.content_hash,
            now,
            now,
        )
        for d in docs
    ]
    if not params:
        return 0
    return (
        yield from execute_many(
            f"INSERT INTO documents ({_SELECT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, document = excluded.document, "
            "file_modified = excluded.file_modified, content_hash = excluded.content_hash, "
            "updated_at = excluded.updated_at",
            params,
        )
    )


def delete_many(ids: Iterable[str]) -> Work[int]:
    params = [(i,) for i in ids]
    if not params:
        return 0
    return (yield from execute_many("DELETE FROM documents WHERE id = ?", params))


def _json_field(path: str, column: str = "document") -> str:
    """``json_extract(document, '$.a.b')`` (SQLite built-in, a function of migration 0006 on
    PostgreSQL). The path is inlined, so that the expression indexes of 0006 apply: it must be
    validated (dotted identifiers only) before it gets here."""
    if not JSON_PATH.fullmatch(path):
        raise ValueError(f"not a JSON field path: {path!r}")
    return f"json_extract({column}, '$.{path}')"


async def list_page(
    db: Database,
    *,
    limit: int,
    kind: str | None = None,
    name: str | None = None,
    fields: dict[str, str] | None = None,
    after: tuple[str, str] | None = None,
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """Documents ordered by (name, id), keyset-paged; the position to continue after.
    ``fields``: JSON field path -> the string it must equal."""
    where = Where().equal("type", kind).equal("name", name)
    for path, value in (fields or {}).items():
        where.add(f"{_json_field(path)} = ?", value)
    if after is not None:
        where.add("(name > ? OR (name = ? AND id > ?))", after[0], after[0], after[1])
    sql = f"SELECT {_SELECT} FROM documents{where.sql()} ORDER BY name, id LIMIT ?"
    rows = await db.fetchall(sql, [*where.params, limit + 1])
    items = [decode(r) for r in rows[:limit]]
    more = len(rows) > limit
    return items, ((items[-1]["name"], items[-1]["id"]) if more else None)


async def search(
    db: Database,
    text: str,
    *,
    limit: int,
    kind: str | None = None,
    name: str | None = None,
    fields: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The best ``limit`` documents matching every word of ``text`` (name and content)."""
    where = Where().equal("t.type", kind).equal("t.name", name)
    for path, value in (fields or {}).items():
        where.add(f"{_json_field(path, 't.document')} = ?", value)
    query = ranked_matches(
        "documents", COLUMNS, text, conditions=where.conditions, params=where.params, limit=limit
    )
    return [decode(r) for r in await db.fetch_per_backend(query)]


async def get(db: Database, document_id: str) -> dict[str, Any] | None:
    row = await db.fetchone(f"SELECT {_SELECT} FROM documents WHERE id = ?", (document_id,))
    return decode(row) if row else None


async def get_by_name(db: Database, kind: str, name: str) -> dict[str, Any] | None:
    """The document of ``kind`` called ``name`` (the first by id if several share it)."""
    row = await db.fetchone(
        f"SELECT {_SELECT} FROM documents WHERE type = ? AND name = ? ORDER BY id LIMIT 1",
        (kind, name),
    )
    return decode(row) if row else None


async def count_by_type(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT type, count(*) FROM documents GROUP BY type ORDER BY type")
    return {str(r[0]): int(r[1]) for r in rows}
