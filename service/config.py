"""One configuration dataclass: CLI flags win over ``BOBGEN_*`` variables, then defaults."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.db.database import DatabaseOptions
from service.db.url import DatabaseURL, InvalidDatabaseURL
from service.documents import resolve_roots

ENV_PREFIX = "BOBGEN_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = DatabaseURL.sqlite(Path("data/bobgen.db"))


def _migrations_dir() -> Path:
    """The checkout's migrations/ (run from source or an editable install), else the copy an
    installed wheel carries under ``<prefix>/share/bobgen/migrations`` (pyproject.toml)."""
    checkout = PROJECT_ROOT / "migrations"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "bobgen" / "migrations"


DEFAULT_MIGRATIONS_DIR = _migrations_dir()


class ConfigError(ValueError):
    """A configuration value could not be parsed or is out of range."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the service can be told. A field maps to ``--flag-name`` and ``BOBGEN_NAME``."""

    host: str = "127.0.0.1"
    port: int = 8080
    db: DatabaseURL = DEFAULT_DB
    seed_rows: int = 100_000
    seed_batch_size: int = 5_000
    log_level: str = "INFO"
    log_format: str = "text"  # or json (service/logs.py)
    read_connections: int = 2
    busy_timeout_ms: int = 5_000
    max_body_bytes: int = 64 * 1024
    shutdown_timeout_s: float = 10.0
    checkpoint_interval_s: float = 1.0
    write_batch_max: int = 64
    write_batch_wait_ms: float = 0.0
    token_cache_ttl_s: float = 30.0
    body_timeout_s: float = 30.0
    request_timeout_s: float = 60.0
    startup_check: bool = True
    pg_pool_size: int = 10
    pg_command_timeout_s: float = 30.0
    pg_connect_timeout_s: float = 5.0
    pg_statement_cache_size: int = 100  # 0 behind pgbouncer in transaction mode
    documents_dirs: str = ""  # roots holding personas/ and prompts/, os.pathsep-separated
    documents_debounce_ms: int = 500
    documents_max_bytes: int = 1024 * 1024
    access_log: bool = False
    cors_origins: str = ""  # comma-separated origins browsers may call from; empty: no CORS
    auth_reads: bool = False
    migrations_dir: Path = field(default=DEFAULT_MIGRATIONS_DIR)
    data_dir: Path = Path("data")  # files the server writes beside a server database
    shutdown_grace_s: float = 5.0  # /readyz says 503 this long before the listener closes
    backup_dir: str = ""  # scheduled backups go here; empty: no schedule (docs/operations.md)
    backup_every: str = "1d"  # 90s, 30m, 6h, 1d, or seconds
    backup_keep: int = 7  # scheduled backups kept; the oldest beyond are removed
    workers: str = "1"  # serving processes: a number, or "auto" for the usable cores

    def __post_init__(self) -> None:
        if not isinstance(self.db, DatabaseURL):
            try:
                object.__setattr__(self, "db", DatabaseURL.parse(self.db))
            except InvalidDatabaseURL as exc:
                raise ConfigError(str(exc)) from None
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.seed_rows < 0:
            raise ConfigError(f"seed_rows must be >= 0, got {self.seed_rows}")
        if self.seed_batch_size < 1:
            raise ConfigError(f"seed_batch_size must be >= 1, got {self.seed_batch_size}")
        if self.read_connections < 1:
            raise ConfigError(f"read_connections must be >= 1, got {self.read_connections}")
        if self.busy_timeout_ms < 0:
            raise ConfigError(f"busy_timeout_ms must be >= 0, got {self.busy_timeout_ms}")
        if self.checkpoint_interval_s <= 0:
            raise ConfigError(
                f"checkpoint_interval_s must be > 0, got {self.checkpoint_interval_s}"
            )
        if not 1 <= self.write_batch_max <= 10_000:
            raise ConfigError(f"write_batch_max must be 1..10000, got {self.write_batch_max}")
        if not 0 <= self.write_batch_wait_ms <= 1000:
            raise ConfigError(
                f"write_batch_wait_ms must be 0..1000, got {self.write_batch_wait_ms}"
            )
        for name in ("token_cache_ttl_s", "body_timeout_s", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1 <= self.pg_pool_size <= 1000:
            raise ConfigError(f"pg_pool_size must be 1..1000, got {self.pg_pool_size}")
        if self.pg_statement_cache_size < 0:
            raise ConfigError(
                f"pg_statement_cache_size must be >= 0, got {self.pg_statement_cache_size}"
            )
        for name in ("pg_command_timeout_s", "pg_connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        # Resolved once, here, against the working directory at start: watchfiles reports
        # absolute paths, and a root kept as given (`make run`'s seeds/documents) matched none.
        roots = resolve_roots(p for p in self.documents_dirs.split(os.pathsep) if p.strip())
        object.__setattr__(self, "documents_dirs", os.pathsep.join(map(str, roots)))
        for root in self.document_roots:
            if not root.is_dir():
                raise ConfigError(f"documents_dirs: not a directory: {root}")
        if not 0 <= self.shutdown_grace_s <= 3600:
            raise ConfigError(f"shutdown_grace_s must be 0..3600, got {self.shutdown_grace_s}")
        if not 1 <= self.documents_debounce_ms <= 60_000:
            raise ConfigError(
                f"documents_debounce_ms must be 1..60000, got {self.documents_debounce_ms}"
            )
        if self.documents_max_bytes < 1:
            raise ConfigError(f"documents_max_bytes must be >= 1, got {self.documents_max_bytes}")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        for origin in self.cors_origin_list:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise ConfigError(f"cors origin must look like https://host[:port], got {origin!r}")
        if self.backup_dir:
            object.__setattr__(self, "backup_dir", str(Path(self.backup_dir).resolve()))
        try:
            every = parse_duration(self.backup_every)
        except ValueError as exc:
            raise ConfigError(f"backup_every: {exc}") from None
        if not 1 <= every <= 366 * 86400:
            raise ConfigError(f"backup_every must be 1s..366d, got {self.backup_every!r}")
        if not 1 <= self.backup_keep <= 10_000:
            raise ConfigError(f"backup_keep must be 1..10000, got {self.backup_keep}")
        try:
            count = self.worker_count
        except ValueError:
            raise ConfigError(f"workers must be a number or auto, got {self.workers!r}") from None
        if not 1 <= count <= MAX_WORKERS:
            raise ConfigError(f"workers must be 1..{MAX_WORKERS} or auto, got {self.workers!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be text or json, got {self.log_format!r}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"unknown log level {self.log_level!r}")

    @classmethod
    def from_sources(
        cls, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Config:
        """Merge flags (highest precedence), ``BOBGEN_*`` environment variables, then defaults.

        ``flags`` values of ``None`` mean "not given on the command line", so argparse
        defaults must be ``None`` for the environment to be consulted.
        """
        flags = flags or {}
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = flags.get(f.name)
            source = f"--{f.name.replace('_', '-')}"
            if raw is None:
                raw = env.get(ENV_PREFIX + f.name.upper())
                source = ENV_PREFIX + f.name.upper()
            if raw is None:
                continue
            values[f.name] = _coerce(f, raw, source)
        return cls(**values)

    @property
    def document_roots(self) -> tuple[Path, ...]:
        """The documents roots, in order (the first wins for a path found in several), absolute
        and resolved (``__post_init__``)."""
        return tuple(Path(p) for p in self.documents_dirs.split(os.pathsep) if p)

    def database_options(self) -> DatabaseOptions:
        return DatabaseOptions(
            read_connections=self.read_connections,
            busy_timeout_ms=self.busy_timeout_ms,
            max_batch=self.write_batch_max,
            max_batch_wait_ms=self.write_batch_wait_ms,
            close_timeout_s=self.shutdown_timeout_s,
            pool_size=self.pg_pool_size,
            command_timeout_s=self.pg_command_timeout_s,
            connect_timeout_s=self.pg_connect_timeout_s,
            statement_cache_size=self.pg_statement_cache_size,
        )

    def to_public_dict(self) -> dict[str, Any]:
        """The configuration as JSON-able values without secrets, for logs and diagnostics."""
        return {
            f.name: str(v) if isinstance(v := getattr(self, f.name), Path | DatabaseURL) else v
            for f in dataclasses.fields(self)
            if not f.metadata.get("secret")
        }

    @property
    def backup_every_s(self) -> float:
        return parse_duration(self.backup_every)

    def backup_folder(self) -> Path:
        """Where backups go: ``backup_dir``, else ``backups/`` beside a SQLite file or in the
        data dir (for the automatic ones before an import or a rollback)."""
        if self.backup_dir:
            return Path(self.backup_dir)
        base = self.db.path.parent if self.db.path is not None else self.data_dir
        return base / "backups"

    @property
    def worker_count(self) -> int:
        """Serving processes (``--workers``): ``auto`` is the cores this process may run on
        (its CPU affinity, which containers and ``taskset`` narrow), not the machine's."""
        text = str(self.workers).strip().lower()
        if text == "auto":
            return (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        return int(text)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def config_hash(self) -> str:
        """SHA-256 of the normalized configuration (sorted-key JSON, secrets excluded).

        Recorded with every run, so two runs can be told to have used the same settings.
        """
        normalized = json.dumps(self.to_public_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(normalized.encode()).hexdigest()


MAX_WORKERS = 256

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``6h``, ``1d`` or a plain number of seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", str(text))
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use 90s, 30m, 6h, 1d or seconds)")
    return float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1)


def _coerce(f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    kind = f.type if isinstance(f.type, type) else _TYPES.get(str(f.type), str)
    if isinstance(raw, kind):
        return raw
    if kind is DatabaseURL:
        try:
            return DatabaseURL.parse(str(raw), source)
        except InvalidDatabaseURL as exc:
            raise ConfigError(str(exc)) from None
    if kind is bool:
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"{source}: cannot read {raw!r} as a boolean (use true or false)")
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: cannot read {raw!r} as {kind.__name__}") from exc


_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "Path": Path,
    "DatabaseURL": DatabaseURL,
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
