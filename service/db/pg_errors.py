"""asyncpg exceptions -> the backend-neutral errors of :mod:`service.db.errors`."""

from __future__ import annotations

import asyncpg

from service.db.errors import (
    DatabaseBusy,
    DatabaseClosed,
    DatabaseUnavailable,
    DiskFull,
    ForeignKeyViolation,
    IntegrityViolation,
    SerializationConflict,
    UniqueViolation,
    ValueOutOfRange,
)

# The connection is gone or never came: the server is down, restarting, or unreachable.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,  # pg_terminate_backend, server stop
    asyncpg.CrashShutdownError,
    asyncpg.InvalidCatalogNameError,  # the database was dropped
    OSError,  # refused, reset, unreachable
    ConnectionError,
)


def translate(exc: BaseException) -> BaseException:
    """The neutral error for ``exc`` (chained to it), or ``exc`` itself when it is a bug in
    our SQL (a syntax error, a wrong type): those must stay loud, as 500s with a log."""
    neutral: BaseException
    if isinstance(exc, asyncpg.UniqueViolationError):
        neutral = UniqueViolation(_message(exc))
    elif isinstance(exc, asyncpg.ForeignKeyViolationError):
        neutral = ForeignKeyViolation(_message(exc))
    elif isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        neutral = IntegrityViolation(_message(exc))
    elif isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError):
        neutral = SerializationConflict(_message(exc))
    elif isinstance(exc, asyncpg.LockNotAvailableError):
        neutral = DatabaseBusy(f"database is busy: {_message(exc)}")
    elif isinstance(exc, asyncpg.DiskFullError):
        neutral = DiskFull(f"no space left for the database: {_message(exc)}")
    elif isinstance(exc, asyncpg.UndefinedTableError):
        # The schema is missing or broken (a bad restore): the database is unusable as is.
        neutral = DatabaseUnavailable(f"the schema is incomplete: {_message(exc)}")
    elif isinstance(exc, asyncpg.QueryCanceledError | TimeoutError):
        neutral = DatabaseUnavailable(f"the database did not answer in time: {_message(exc)}")
    elif isinstance(exc, asyncpg.InternalClientError):
        # asyncpg lost track of the session's state, seen when the server ended the session
        # in the middle of a statement (a restart, pg_terminate_backend).
        neutral = DatabaseUnavailable(f"the PostgreSQL session broke: {_message(exc)}")
    elif isinstance(exc, asyncpg.DataError):  # 22xxx: a value out of its column's range
        neutral = ValueOutOfRange(f"a value does not fit the database: {_message(exc)}")
    elif isinstance(exc, asyncpg.InterfaceError) and "pool is closing" in str(exc):
        neutral = DatabaseClosed("database is closed")
    elif isinstance(exc, (*_CONNECTION_LOST, asyncpg.InterfaceError)):
        neutral = DatabaseUnavailable(f"PostgreSQL is unreachable: {_message(exc)}")
    elif isinstance(exc, asyncpg.InsufficientResourcesError | asyncpg.OperatorInterventionError):
        neutral = DatabaseUnavailable(f"PostgreSQL refused the work: {_message(exc)}")
    else:
        return exc
    neutral.__cause__ = exc
    return neutral


def is_connection_lost(exc: BaseException | None) -> bool:
    """True when retrying on a fresh connection may succeed (a pooled connection died). A
    connection whose server session was terminated while idle can also fail with asyncpg's
    InternalClientError ("another operation is in progress"): its protocol state is gone."""
    lost = (
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.AdminShutdownError,
        asyncpg.exceptions.InternalClientError,
    )
    return isinstance(exc, lost) or (exc is not None and isinstance(exc.__cause__, lost))


def _message(exc: BaseException) -> str:
    # Never the DSN: asyncpg's messages carry host and port at most, no password.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
