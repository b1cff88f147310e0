"""Connections, transactions (units of work), migrations, and the errors code above may catch.

:func:`connect` turns a :class:`DatabaseURL` (the ``--db`` setting) into the matching backend.
"""

from service.db.database import Database, DatabaseOptions
from service.db.errors import (
    DatabaseBusy,
    DatabaseClosed,
    DatabaseError,
    DatabaseNotWritable,
    DatabaseUnavailable,
    DiskFull,
    ForeignKeyViolation,
    IntegrityViolation,
    SerializationConflict,
    UniqueViolation,
    ValueOutOfRange,
)
from service.db.url import DatabaseURL, InvalidDatabaseURL
from service.db.work import (
    Work,
    execute,
    execute_later,
    execute_many,
    lock_for_inserts,
    notify,
    query,
    query_for_update,
    query_one,
    returning,
    savepoint,
    sync_identity,
)


def connect(url: DatabaseURL, options: DatabaseOptions | None = None) -> Database:
    """An unopened database for ``url``: SQLite for a file, PostgreSQL for a server URL."""
    options = options or DatabaseOptions()
    if url.is_postgresql:
        from service.db.postgres import PostgresDatabase  # asyncpg only when it is used

        return PostgresDatabase(url, options)
    from service.db.sqlite import SqliteDatabase

    return SqliteDatabase(
        url,
        read_connections=options.read_connections,
        busy_timeout_ms=options.busy_timeout_ms,
        max_batch=options.max_batch,
        max_batch_wait_ms=options.max_batch_wait_ms,
        close_timeout_s=options.close_timeout_s,
    )


__all__ = [
    "Database",
    "DatabaseBusy",
    "DatabaseClosed",
    "DatabaseError",
    "DatabaseNotWritable",
    "DatabaseOptions",
    "DatabaseURL",
    "DatabaseUnavailable",
    "DiskFull",
    "ForeignKeyViolation",
    "IntegrityViolation",
    "InvalidDatabaseURL",
    "SerializationConflict",
    "UniqueViolation",
    "ValueOutOfRange",
    "Work",
    "connect",
    "execute",
    "execute_later",
    "execute_many",
    "lock_for_inserts",
    "notify",
    "query",
    "query_for_update",
    "query_one",
    "returning",
    "savepoint",
    "sync_identity",
]
