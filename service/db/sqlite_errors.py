"""sqlite3 exceptions -> the backend-neutral errors of :mod:`service.db.errors`."""

from __future__ import annotations

import sqlite3

from service.db.errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    DiskFull,
    ForeignKeyViolation,
    IntegrityViolation,
    UniqueViolation,
)

# Primary result codes (the low byte of sqlite_errorcode), from sqlite3.h.
_BUSY, _LOCKED, _FULL = 5, 6, 13
_UNAVAILABLE = {
    3,  # PERM
    8,  # READONLY
    10,  # IOERR
    11,  # CORRUPT
    14,  # CANTOPEN
    26,  # NOTADB
}


def translate(exc: BaseException) -> BaseException:
    """The neutral error for ``exc`` (chained to it), or ``exc`` itself when it is a bug in
    our SQL (a syntax error, a missing column): those must stay loud, as 500s with a log."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF
    message = str(exc)
    neutral: BaseException
    if isinstance(exc, sqlite3.IntegrityError):
        if "FOREIGN KEY" in message:
            neutral = ForeignKeyViolation(message)
        elif "UNIQUE" in message or "PRIMARY KEY" in message:
            neutral = UniqueViolation(message)
        else:
            neutral = IntegrityViolation(message)
    elif code in (_BUSY, _LOCKED) or "locked" in message:
        neutral = DatabaseBusy(f"database is busy: {message}")
    elif code == _FULL or "disk is full" in message:
        neutral = DiskFull(f"no space left for the database: {message}")
    elif code in _UNAVAILABLE or "closed" in message or "no such table" in message:
        neutral = DatabaseUnavailable(f"{type(exc).__name__}: {message}")
    else:
        return exc
    neutral.__cause__ = exc
    return neutral
