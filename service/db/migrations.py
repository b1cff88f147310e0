"""Schema migrations with yoyo. yoyo is synchronous: call these through ``asyncio.to_thread``.

The pending list is always computed while holding yoyo's lock, so two processes starting at
once cannot both decide to apply the same migration.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoyo import get_backend, read_migrations
from yoyo.backends import DatabaseBackend
from yoyo.exceptions import LockTimeout

from service.db.sqlite import create_private
from service.db.url import DatabaseURL, redact_text

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 30


class MigrationError(RuntimeError):
    """Migrations could not be read or applied."""


@dataclass(frozen=True, slots=True)
class MigrationState:
    applied: list[str]
    pending: list[str]

    @property
    def head(self) -> str | None:
        return self.applied[-1] if self.applied else None


Target = DatabaseURL | Path | str
"""The ``--db`` setting, a SQLite file path, or a yoyo URI (``postgresql+psycopg://...``)."""


def database_uri(target: Target) -> str:
    if isinstance(target, DatabaseURL):
        return target.yoyo_uri()
    if isinstance(target, str) and "://" in target:
        return target
    return f"sqlite:///{Path(target).resolve()}"


def _name_the_user() -> None:
    """Give yoyo a user name to record when the process's uid has none.

    yoyo logs ``getpass.getuser()`` with every migration, which raises KeyError for a uid
    without a passwd entry (a container run with an arbitrary ``--user``, OpenShift): the
    first start then died in the middle of migrating. getuser() reads $USER first.
    """
    try:
        getpass.getuser()
    except (KeyError, OSError):
        os.environ["USER"] = f"uid-{os.getuid()}"


@contextmanager
def _locked_backend(target: Target, lock_timeout_s: float) -> Iterator[DatabaseBackend]:
    """A yoyo backend holding yoyo's migration lock; always closed afterwards."""
    _name_the_user()
    uri = database_uri(target)
    if uri.startswith("sqlite:"):
        path = Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path)
    try:
        backend = get_backend(uri)
    except Exception as exc:  # psycopg's OperationalError and friends: keep drivers down here
        raise MigrationError(f"cannot reach the database for migrations: {_redact(exc)}") from None
    try:
        with backend.lock(timeout=lock_timeout_s):
            yield backend
    except LockTimeout as exc:
        raise MigrationError(
            f"{exc} — see docs/runbook.md, 'Recovering a stale yoyo lock'"
        ) from exc
    finally:
        backend.connection.close()


def _read(migrations_dir: Path) -> Any:  # yoyo's MigrationList (yoyo is untyped)
    if not Path(migrations_dir).is_dir():
        raise MigrationError(f"migrations directory not found: {migrations_dir}")
    return read_migrations(str(migrations_dir))


def apply_migrations(
    db_path: Target, migrations_dir: Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    migrations = _read(migrations_dir)
    with _locked_backend(db_path, lock_timeout_s) as backend:
        pending = backend.to_apply(migrations)
        ids = [m.id for m in pending]
        if ids:
            log.info("applying migrations: %s", ", ".join(ids))
            backend.apply_migrations(pending)
    return ids


def rollback_migrations(
    db_path: Target, migrations_dir: Path, steps: int = 1, *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> list[str]:
    """Roll back the newest ``steps`` applied migrations; return their ids, newest first."""
    migrations = _read(migrations_dir)
    with _locked_backend(db_path, lock_timeout_s) as backend:
        applied = backend.to_rollback(migrations)
        chosen = applied[:steps] if steps >= 0 else applied
        ids = [m.id for m in chosen]
        if ids:
            log.info("rolling back migrations: %s", ", ".join(ids))
            backend.rollback_migrations(chosen)
    return ids


def migration_state(
    db_path: Target, migrations_dir: Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> MigrationState:
    """Applied (oldest first) and pending migration ids."""
    migrations = _read(migrations_dir)
    with _locked_backend(db_path, lock_timeout_s) as backend:
        pending = {m.id for m in backend.to_apply(migrations)}
    return MigrationState(
        applied=[m.id for m in migrations if m.id not in pending],
        pending=[m.id for m in migrations if m.id in pending],
    )


def _redact(exc: BaseException) -> str:
    """The first line of a driver's message. libpq may echo the connection string, so
    anything that looks like a password is masked."""
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)
