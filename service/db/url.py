"""Which database to use: one setting (``--db`` / ``BOBGEN_DB``) names a file or a server.

* a file path (``data/bobgen.db``, ``/var/lib/bobgen/bobgen.db``): embedded SQLite;
* ``postgresql://user[:password]@host[:port]/dbname[?options]`` (or ``postgres://``): a
  PostgreSQL server through asyncpg.

Anything else that looks like a URL (``mysql://...``, ``postgresql:/typo``) is refused at start
with one line naming the setting, before any file or folder is created: a mistyped URL must
never silently become a SQLite file in a folder named ``postgresql:``.

The password is a secret. :meth:`DatabaseURL.__str__` (used by logs, /health, doctor, audit
rows and ``config_hash``) redacts it; only :attr:`DatabaseURL.dsn` carries it, for drivers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_PG_SCHEMES = {"postgresql", "postgres"}
# Query options passed through to the drivers; everything else is refused so that a typo
# (``sslmdoe=``) is not silently ignored.
_PG_OPTIONS = {"sslmode", "application_name", "connect_timeout"}


class InvalidDatabaseURL(ValueError):
    """The database setting is neither a file path nor a usable postgresql:// URL."""


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database setting. Compare and hash it by its redacted text."""

    backend: str
    path: Path | None = None  # SQLite only
    dsn: str = field(default="", repr=False, compare=False)  # PostgreSQL only, with password
    redacted: str = ""

    @classmethod
    def parse(cls, value: str | Path | DatabaseURL, setting: str = "--db") -> DatabaseURL:
        if isinstance(value, DatabaseURL):
            return value
        if isinstance(value, Path):
            return cls.sqlite(value)
        text = value.strip()
        if not text:
            raise InvalidDatabaseURL(f"{setting}: is empty (give a file path or postgresql://...)")
        match = _SCHEME.match(text)
        # "C:\\data.db" is not a URL scheme; anything else with "scheme:" is treated as a URL.
        if match is None or (
            len(match.group(1)) == 1 and not text.startswith(match.group(0) + "//")
        ):
            return cls.sqlite(Path(text))
        scheme = match.group(1).lower()
        if scheme == "file":
            return cls.sqlite(Path(unquote(urlsplit(text).path)))
        if scheme not in _PG_SCHEMES:
            raise InvalidDatabaseURL(
                f"{setting}: unsupported database URL scheme {scheme!r} "
                "(use a file path for SQLite or postgresql://user@host:port/dbname)"
            )
        return cls._postgresql(text, setting)

    @classmethod
    def sqlite(cls, path: Path) -> DatabaseURL:
        return cls(SQLITE, path=path, redacted=str(path))

    @classmethod
    def _postgresql(cls, text: str, setting: str) -> DatabaseURL:
        def bad(why: str) -> InvalidDatabaseURL:
            return InvalidDatabaseURL(
                f"{setting}: malformed PostgreSQL URL ({why}): {_redact(text)}"
            )

        if not text.split(":", 1)[1].startswith("//"):
            raise bad("expected postgresql://user@host:port/dbname")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise bad(str(exc)) from None
        if not parts.hostname:
            raise bad("no host")
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise bad("no database name")
        if port is not None and not 0 < port < 65536:
            raise bad("port out of range")
        if parts.fragment:
            raise bad("unexpected '#'")
        options = [p.split("=", 1)[0] for p in parts.query.split("&") if p]
        unknown = sorted(set(options) - _PG_OPTIONS)
        if unknown:
            raise bad(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(_PG_OPTIONS))}"
            )
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
        return cls(POSTGRESQL, dsn=dsn, redacted=_redact(dsn))

    @property
    def is_sqlite(self) -> bool:
        return self.backend == SQLITE

    @property
    def is_postgresql(self) -> bool:
        return self.backend == POSTGRESQL

    @property
    def sqlite_path(self) -> Path:
        """The file, for code that only makes sense on SQLite (backups, integrity checks)."""
        if self.path is None:
            raise InvalidDatabaseURL(f"{self.redacted} is not a SQLite file")
        return self.path

    def yoyo_uri(self) -> str:
        """The URI yoyo-migrations understands (it drives psycopg 3 on PostgreSQL)."""
        if self.path is not None:
            return f"sqlite:///{self.path.resolve()}"
        parts = urlsplit(self.dsn)
        return urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, parts.query, ""))

    def __str__(self) -> str:
        return self.redacted


def redact_text(text: str) -> str:
    """``text`` (a driver's message, say) with anything shaped like a password masked: the
    password of a ``//user:password@`` URL and a libpq ``password=`` setting."""
    text = re.sub(r"password=\S+", "password=***", text)
    return re.sub(r"//([^:/@\s]*):[^@\s]*@", r"//\1:***@", text)


def _redact(text: str) -> str:
    """The URL with its password replaced by ``***`` (user, host, port and database kept)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return redact_text(text)
    if parts.password is None:
        return text
    user = quote(unquote(parts.username or ""), safe="")
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
