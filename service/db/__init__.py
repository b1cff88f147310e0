"""Connections, transactions (units of work), migrations, and the errors code above may catch."""

from service.db.database import Database
from service.db.errors import (
    DatabaseBusy,
    DatabaseClosed,
    DatabaseError,
    DatabaseUnavailable,
    DiskFull,
    ForeignKeyViolation,
    IntegrityViolation,
    UniqueViolation,
)
from service.db.work import (
    Work,
    execute,
    execute_many,
    notify,
    query,
    query_one,
    returning,
    savepoint,
)

__all__ = [
    "Database",
    "DatabaseBusy",
    "DatabaseClosed",
    "DatabaseError",
    "DatabaseUnavailable",
    "DiskFull",
    "ForeignKeyViolation",
    "IntegrityViolation",
    "UniqueViolation",
    "Work",
    "execute",
    "execute_many",
    "notify",
    "query",
    "query_one",
    "returning",
    "savepoint",
]
