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


async def list_token_page(db: Database, *, after: int | None, limit: int) -> list[TokenRecord]:
    """Up to ``limit`` tokens with ids above ``after``, by id."""
    return await db.read(tokens_repo.list_page(after or 0, limit))


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


class TokenFileError(OSError):
    """The initial admin token file cannot be written: the start fails, and no token is made."""


def initial_token_path(url: DatabaseURL, data_dir: Path = Path("data")) -> Path:
    """Next to the SQLite file; for a server database, ``<data_dir>/<dbname>.admin-token``
    (``--data-dir``, default ``data/``: the image and compose make ``/data`` writable)."""
    if url.path is not None:
        return url.path.with_name(url.path.name + ".admin-token")
    dbname = url.redacted.rsplit("/", 1)[-1].split("?", 1)[0] or "bobgen"
    return data_dir / f"{dbname}.admin-token"


async def ensure_initial_admin_token(db: Database, data_dir: Path = Path("data")) -> Path | None:
    """On a database with no tokens at all, create an admin token and write it to a 0600 file.

    Returns the file's path (which is logged; the token never is), or None if tokens exist.
    The file is written inside the transaction, before the COMMIT that makes the token valid:
    a token that nobody can read is never committed (the container lost its only admin token
    so: the row committed, the file write failed, and the next start saw a token and made
    none). If the COMMIT fails after the file was written, the file holds a token that is not
    valid, and the next start writes a new one over it. The count is re-read inside the write,
    with the table locked for inserts, so several instances starting at once on one PostgreSQL
    database create one token, not several.
    """
    if await db.read(tokens_repo.count_all()):
        return None
    path = initial_token_path(db.url, data_dir)

    def work(w: AuditedWrite) -> Work[TokenRecord]:
        yield from lock_for_inserts("auth_tokens")
        if (yield from tokens_repo.count_all()):
            raise _TokensExist
        token, record = yield from issue_token(
            w, user="admin", name="initial admin token", scopes=ALL_SCOPES
        )
        _write_token_file(path, token)
        return record

    try:
        record = await audited_write(db, SYSTEM_ACTOR, work)
    except _TokensExist:
        return None
    log.warning(
        "created initial admin token %d; it is in %s (readable by this user only)", record.id, path
    )
    return path


def _write_token_file(path: Path, token: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, token + "\n")
    except OSError as exc:
        raise TokenFileError(
            exc.errno,
            f"cannot write the initial admin token into {path.parent}: "
            f"{exc.strerror or exc}; make that directory writable for this user or point "
            "--data-dir (BOBGEN_DATA_DIR) at one that is; no token was created",
        ) from None


def _write_private(path: Path, text: str) -> None:
    """Write a file that is 0600 from its first byte (no window where others could read it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
