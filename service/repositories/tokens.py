"""SQL for ``auth_tokens``. Only hashes are stored; the token itself never reaches the DB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from service.auth import Scope, format_scopes, parse_scopes
from service.db import Database

_COLUMNS = 'id, "user", name, token_hash, scopes, created_at, last_used_at, revoked_at'


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    user: str
    name: str
    token_hash: str
    scopes: frozenset[Scope]
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def public(self) -> dict[str, Any]:
        """Everything but the hash: safe to print and to return from an API."""
        return {
            "id": self.id, "user": self.user, "name": self.name,
            "scopes": format_scopes(self.scopes), "created_at": self.created_at,
            "last_used_at": self.last_used_at, "revoked_at": self.revoked_at,
        }  # fmt: skip


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(row[0], row[1], row[2], row[3], parse_scopes(row[4]), *row[5:])


async def insert(
    conn: aiosqlite.Connection,
    *,
    user: str,
    name: str,
    token_hash: str,
    scopes: frozenset[Scope],
    now: str,
) -> TokenRecord:
    rows = await conn.execute_fetchall(
        f'INSERT INTO auth_tokens ("user", name, token_hash, scopes, created_at) '
        f"VALUES (?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        (user, name, token_hash, format_scopes(scopes), now),
    )
    return _record(next(iter(rows)))


async def find_by_hashes(db: Database, hashes: Sequence[str]) -> dict[str, TokenRecord]:
    marks = ", ".join("?" * len(hashes))
    rows = await db.fetchall(
        f"SELECT {_COLUMNS} FROM auth_tokens WHERE token_hash IN ({marks})", list(hashes)
    )
    return {row[3]: _record(row) for row in rows}


async def list_all(conn: aiosqlite.Connection) -> list[TokenRecord]:
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM auth_tokens ORDER BY id")
    return [_record(r) for r in rows]


async def get(conn: aiosqlite.Connection, token_id: int) -> TokenRecord | None:
    rows = list(
        await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM auth_tokens WHERE id = ?", (token_id,))
    )
    return _record(rows[0]) if rows else None


async def revoke(conn: aiosqlite.Connection, token_id: int, now: str) -> bool:
    """Mark revoked; False when there is no such token or it was revoked already."""
    cursor = await conn.execute(
        "UPDATE auth_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, token_id)
    )
    return cursor.rowcount == 1


async def count_active(conn: aiosqlite.Connection) -> int:
    rows = list(
        await conn.execute_fetchall("SELECT count(*) FROM auth_tokens WHERE revoked_at IS NULL")
    )
    return int(rows[0][0])


async def count_all(conn: aiosqlite.Connection) -> int:
    rows = list(await conn.execute_fetchall("SELECT count(*) FROM auth_tokens"))
    return int(rows[0][0])


async def touch(conn: aiosqlite.Connection, token_id: int, now: str) -> None:
    await conn.execute("UPDATE auth_tokens SET last_used_at = ? WHERE id = ?", (now, token_id))
