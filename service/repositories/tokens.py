"""SQL for ``auth_tokens``. Only hashes are stored; the token itself never reaches the DB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.db import Database, Work, execute, notify, query, query_one
from service.domain.auth import Scope, format_scopes, parse_scopes

TOKENS_CHANNEL = "auth_tokens"  # notified by every commit that revokes a token

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
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "scopes": format_scopes(self.scopes),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(row[0], row[1], row[2], row[3], parse_scopes(row[4]), *row[5:])


def insert(
    *, user: str, name: str, token_hash: str, scopes: frozenset[Scope], now: str
) -> Work[TokenRecord]:
    rows = yield from query(
        f'INSERT INTO auth_tokens ("user", name, token_hash, scopes, created_at) '
        f"VALUES (?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        (user, name, token_hash, format_scopes(scopes), now),
    )
    return _record(rows[0])


async def find_by_hashes(db: Database, hashes: Sequence[str]) -> dict[str, TokenRecord]:
    """Several tokens in one read (the auth cache batches concurrent misses)."""
    marks = ", ".join("?" * len(hashes))
    rows = await db.fetchall(
        f"SELECT {_COLUMNS} FROM auth_tokens WHERE token_hash IN ({marks})", list(hashes)
    )
    return {row[3]: _record(row) for row in rows}


def list_all() -> Work[list[TokenRecord]]:
    rows = yield from query(f"SELECT {_COLUMNS} FROM auth_tokens ORDER BY id")
    return [_record(r) for r in rows]


def list_page(after: int, limit: int) -> Work[list[TokenRecord]]:
    rows = yield from query(
        f"SELECT {_COLUMNS} FROM auth_tokens WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
    )
    return [_record(r) for r in rows]


def get(token_id: int) -> Work[TokenRecord | None]:
    row = yield from query_one(f"SELECT {_COLUMNS} FROM auth_tokens WHERE id = ?", (token_id,))
    return _record(row) if row else None


def revoke(token_id: int, now: str) -> Work[bool]:
    """Mark revoked; False when there is no such token or it was revoked already.

    Notifies ``auth_tokens`` so every process's token cache forgets what it knew.
    """
    changed = yield from execute(
        "UPDATE auth_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, token_id)
    )
    if changed:
        yield from notify(TOKENS_CHANNEL)
    return changed == 1


def count_active() -> Work[int]:
    row = yield from query_one("SELECT count(*) FROM auth_tokens WHERE revoked_at IS NULL")
    return int(row[0]) if row else 0


def count_all() -> Work[int]:
    row = yield from query_one("SELECT count(*) FROM auth_tokens")
    return int(row[0]) if row else 0


def touch(token_id: int, now: str) -> Work[int]:
    return (
        yield from execute("UPDATE auth_tokens SET last_used_at = ? WHERE id = ?", (now, token_id))
    )
