"""Token lifecycle shared by the CLI and the server: create, list, revoke, first-start token."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from service.audit import SYSTEM_ACTOR, AuditedWrite, audited_write
from service.db import Database, DatabaseURL, Work, lock_for_inserts
from service.domain.auth import (
    ALL_SCOPES,
    InvalidScopes,
    Scope,
    format_scopes,
    generate_token,
    hash_token,
)
from service.repositories import tokens as tokens_repo
from service.repositories.tokens import TokenRecord

log = logging.getLogger(__name__)


class TokenNotFound(LookupError):
    """No token has that id, or it is revoked already."""


def issue_token(
    w: AuditedWrite, *, user: str, name: str, scopes: frozenset[Scope]
) -> Work[tuple[str, TokenRecord]]:
    """The unit of work behind :func:`create_token`; nests inside any audited write."""
    if not scopes:
        raise InvalidScopes("name at least one scope")
    token = generate_token()
    record = yield from tokens_repo.insert(
        user=user, name=name, token_hash=hash_token(token), scopes=scopes, now=w.now
    )
    w.audit(
        "token.created",
        scope="auth",
        message=f"token {record.id} created for {user}",
        data={"id": record.id, "user": user, "name": name, "scopes": format_scopes(scopes)},
    )
    return token, record


async def create_token(
    db: Database, *, user: str, name: str, scopes: frozenset[Scope], actor: str
) -> tuple[str, TokenRecord]:
    """Return the new token (to show once) and its stored record (which holds only the hash)."""
    return await audited_write(
        db, actor, lambda w: issue_token(w, user=user, name=name, scopes=scopes)
    )


async def list_tokens(db: Database) -> list[TokenRecord]:
    return await db.read(tokens_repo.list_all())


async def revoke_token(db: Database, token_id: int, *, actor: str) -> None:
    def work(w: AuditedWrite) -> Work[None]:
        if not (yield from tokens_repo.revoke(token_id, w.now)):
            raise TokenNotFound(f"no active token with id {token_id}")
        w.audit(
            "token.revoked",
            scope="auth",
            message=f"token {token_id} revoked",
            data={"id": token_id},
        )

    await audited_write(db, actor, work)


class _TokensExist(Exception):
    """Tokens were found inside the transaction: nothing to create."""


def initial_token_path(url: DatabaseURL) -> Path:
    """Next to the SQLite file; for a server database, ``data/<dbname>.admin-token`` under
    the working directory of the process that created it."""
    if url.path is not None:
        return url.path.with_name(url.path.name + ".admin-token")
    dbname = url.redacted.rsplit("/", 1)[-1].split("?", 1)[0] or "bobgen"
    return Path("data") / f"{dbname}.admin-token"


async def ensure_initial_admin_token(db: Database) -> Path | None:
    """On a database with no tokens at all, create an admin token and write it to a 0600 file.

    Returns the file's path (which is logged; the token never is), or None if tokens exist.
    The count is re-read inside the write, with the table locked for inserts, so several
    instances starting at once on one PostgreSQL database create one token, not several.
    """
    if await db.read(tokens_repo.count_all()):
        return None

    def work(w: AuditedWrite) -> Work[tuple[str, TokenRecord]]:
        yield from lock_for_inserts("auth_tokens")
        if (yield from tokens_repo.count_all()):
            raise _TokensExist
        return (
            yield from issue_token(w, user="admin", name="initial admin token", scopes=ALL_SCOPES)
        )

    try:
        token, record = await audited_write(db, SYSTEM_ACTOR, work)
    except _TokensExist:
        return None
    path = initial_token_path(db.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, token + "\n")
    log.warning(
        "created initial admin token %d; it is in %s (readable by this user only)", record.id, path
    )
    return path


def _write_private(path: Path, text: str) -> None:
    """Write a file that is 0600 from its first byte (no window where others could read it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
