"""Backend-neutral database errors: what code above ``service/db/`` may catch.

Driver exceptions (sqlite3, aiosqlite, asyncpg) never leave ``service/db/``: each backend
translates them into these, so handlers can tell a duplicate key from a missing parent from a
full disk without knowing which database they run on.
"""

from __future__ import annotations


class DatabaseError(Exception):
    """Base of every error the database layer raises on purpose."""


class DatabaseNotWritable(DatabaseError, PermissionError):
    """The database file (or its folder, where SQLite keeps the WAL) cannot be written: found
    at start-up, in one line, instead of after a lock timeout."""


class DatabaseUnavailable(DatabaseError, RuntimeError):
    """The database could not be queried (missing file, broken schema, I/O error, closed)."""


class DatabaseBusy(DatabaseUnavailable):
    """Another process held SQLite's write lock for longer than ``busy_timeout``."""


class DatabaseClosed(DatabaseUnavailable):
    """The database is closing or closed: no new work is accepted, waiters are failed."""


class DiskFull(DatabaseUnavailable):
    """The filesystem holding the database has no room: the write was not committed."""


class IntegrityViolation(DatabaseError):
    """A constraint refused the change (CHECK, NOT NULL, ...); subclasses say which kind."""


class UniqueViolation(IntegrityViolation):
    """A row with that key exists already."""


class ForeignKeyViolation(IntegrityViolation):
    """The change refers to a row that does not exist, or removes one still referred to."""


class SerializationConflict(DatabaseBusy):
    """Concurrent transactions could not be ordered (a serialization failure or a deadlock).

    The database undid this one; running it again normally succeeds. ``Database.write``
    retries units given as factories a bounded number of times before raising this.
    """


class ValueOutOfRange(DatabaseError, ValueError):
    """A value the database cannot hold (an integer beyond its column's range): bad input
    that got past validation, answered 400 rather than a 500."""


class DatabaseInUse(DatabaseError):
    """The database is open in another BobGen process (a server, a worker, a command): an
    operation that replaces it (``bobgen db restore``) must wait until they stop."""
