"""What the probes, /-/versions and the ops page's snapshot answer."""

from __future__ import annotations

from service.domain.runs import RUN_STATUSES, StepStatus
from service.jobs.seeding import SeedState
from service.schemas.admin import SEED_PROGRESS, SYNC_STATUS, SYNC_SUMMARY
from service.schemas.records import (
    BOOLEAN,
    COUNT,
    NUMBER,
    TEXT,
    TEXT_OR_NULL,
    WHEN,
    WHEN_OR_NULL,
    array,
    extend,
    one_of,
    record,
)
from service.schemas.runs import AUDIT_RECORD, RUN_RECORD

LIVE = record({"status": {"type": "string", "const": "alive"}})
READY = record({"status": {"type": "string", "const": "ready"}})
HEALTH = record(
    {
        "status": {
            **one_of(["ok", "degraded", "unavailable"]),
            "description": "degraded: the API serves, document sync is retrying (still 200)",
        },
        "db": one_of(["ok", "error"]),
        "uptime_s": NUMBER,
        "version": TEXT,
        "seed": record({"state": one_of(SeedState), "rows": COUNT, "target": COUNT}),
        "documents": {**SYNC_SUMMARY, "description": "when a documents root is configured"},
        "reason": {**TEXT, "description": "why the database is unavailable (503 only)"},
        "worker": {
            **record({"index": COUNT, "workers": COUNT, "pid": COUNT}),
            "description": "which of the server's --workers answered (with more than one)",
        },
    },
    optional=("documents", "reason", "worker"),
)
VERSIONS = record(
    {
        "bobgen": TEXT,
        "python": TEXT,
        "aiohttp": TEXT,
        "database": {**TEXT, "description": "the engine and its version, or unavailable"},
        "git_sha": {**TEXT_OR_NULL, "description": "of the checkout it runs from, if any"},
    }
)
_MS_OR_NULL = {"type": ["number", "null"], "description": "interpolated in its histogram bucket"}
_TRAFFIC = record(
    {
        "route": {**TEXT, "description": "the route template"},
        "method": TEXT,
        "kind": {
            **one_of(["api", "page", "unmatched"]),
            "description": "page: the ops page's own requests; unmatched: no such route",
        },
        "requests": {**COUNT, "description": "since the server started"},
        "2xx": COUNT,
        "3xx": COUNT,
        "4xx": COUNT,
        "5xx": COUNT,
        "rate_per_s": {**NUMBER, "description": "over the last minute"},
        "p50_ms": _MS_OR_NULL,
        "p99_ms": _MS_OR_NULL,
    }
)
_POINT = record(
    {
        "at": {**TEXT, "description": "the end of the interval (ISO-8601 UTC)"},
        "rate_per_s": NUMBER,
        "error_ratio": {**NUMBER, "description": "5xx answers over all answers"},
        "p50_ms": _MS_OR_NULL,
        "p99_ms": _MS_OR_NULL,
    }
)
_HISTORY = record(
    {
        "interval_s": NUMBER,
        "overall": {**array(_POINT), "description": "the API's requests (not the page's)"},
        "routes": {
            "type": "object",
            "additionalProperties": array(_POINT),
            "description": "per route template with requests in the window",
        },
    }
)
_COUNT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_DATABASE = record(
    {
        "up": BOOLEAN,
        "reason": TEXT,
        "status_rows": COUNT,
        "backend": one_of(["sqlite", "postgresql"]),
        "engine": {**TEXT, "description": "the engine and its version"},
        "size_bytes": COUNT,
        "wal_bytes": {**_COUNT_OR_NULL, "description": "SQLite's WAL file; null on PostgreSQL"},
        "wal_limit_bytes": {
            **_COUNT_OR_NULL,
            "description": "the size a checkpoint truncates the WAL back to (SQLite)",
        },
        "schema_version": _COUNT_OR_NULL,
        "migrations": record(
            {
                "applied": COUNT,
                "known": {**COUNT, "description": "the migrations this build ships"},
                "head": TEXT_OR_NULL,
                "pending": {**array(TEXT), "description": "what the next start would apply"},
            }
        ),
        "backups": {
            "oneOf": [
                record(
                    {
                        "every_s": NUMBER,
                        "last_success_at": WHEN_OR_NULL,
                        "failures": {**COUNT, "description": "in this process, since start"},
                        "last_error": TEXT_OR_NULL,
                    }
                ),
                {"type": "null"},
            ],
            "description": "the schedule (--backup-dir), null without one",
        },
    },
    optional=(
        "reason",
        "status_rows",
        "backend",
        "engine",
        "size_bytes",
        "wal_bytes",
        "wal_limit_bytes",
        "schema_version",
        "migrations",
        "backups",
    ),
    description="up with its facts, or down with the reason",
)
_RUN = extend(
    RUN_RECORD,
    status={**one_of(RUN_STATUSES), "description": "derived from the steps"},
    steps={
        "type": "object",
        "propertyNames": one_of(StepStatus),
        "additionalProperties": COUNT,
        "description": "the run's steps, counted by status",
    },
)
_DEBUG = record(
    {
        "active_sessions": COUNT,
        "reserved_worktrees": COUNT,
        "expiring_worktrees": {**COUNT, "description": "reserved, the lease ends within 5 min"},
        "expired_worktrees": {**COUNT, "description": "reserved, the lease has ended"},
        "running_commands": COUNT,
        "sessions": {
            **array(
                record(
                    {
                        "id": TEXT,
                        "repository": TEXT,
                        "user": TEXT,
                        "worktree_id": TEXT_OR_NULL,
                        "started_at": WHEN,
                    }
                )
            ),
            "description": "active, newest first (at most 10)",
        },
        "worktrees": {
            **array(
                record(
                    {
                        "id": TEXT,
                        "repository": TEXT,
                        "path": TEXT,
                        "branch": TEXT_OR_NULL,
                        "reserved_by": TEXT,
                        "lease_expires_at": WHEN,
                        "lease": one_of(["held", "expiring", "expired"]),
                    }
                )
            ),
            "description": "reserved, soonest to expire first (at most 10)",
        },
        "commands": {
            **array(
                record(
                    {
                        "id": TEXT,
                        "session_id": TEXT,
                        "command": {**TEXT, "description": "the argv as one line, shortened"},
                        "started_at": WHEN,
                    }
                )
            ),
            "description": "running, newest first (at most 10)",
        },
    }
)
_STORED_BY_TYPE = {
    "type": "object",
    "additionalProperties": COUNT,
    "description": "documents stored, by type",
}
OPS_SNAPSHOT = record(
    {
        "uptime_s": NUMBER,
        "build": record({"version": TEXT, "git_sha": TEXT_OR_NULL}),
        "ready": BOOLEAN,
        "seed": SEED_PROGRESS,
        "traffic": {**array(_TRAFFIC), "description": "per route and method, API first"},
        "history": {**_HISTORY, "description": "the last 15 minutes, every 10 s"},
        "db": _DATABASE,
        "audit": {**array(AUDIT_RECORD), "description": "the newest entries"},
        "runs": {**array(_RUN), "description": "the newest runs"},
        "debug": {**_DEBUG, "description": "debug-server metadata in use now"},
        "documents": {
            "oneOf": [
                SYNC_STATUS,
                extend(SYNC_SUMMARY, documents=_STORED_BY_TYPE),
                SYNC_SUMMARY,
                {"type": "null"},
            ],
            "description": "the sync as /admin/sync shows it to an admin token; to anyone "
            "else (the page is open unless --auth-reads) as /health shows it, with the "
            "documents stored by type; as /health shows it while the database is "
            "unavailable; null without --documents-dir",
        },
    },
    optional=("audit", "runs", "debug"),
)
