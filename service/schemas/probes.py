"""What the probes, /-/versions and the ops page's snapshot answer."""

from __future__ import annotations

from service.schemas.admin import SEED_PROGRESS, SYNC_STATUS, SYNC_SUMMARY
from service.schemas.records import (
    BOOLEAN,
    COUNT,
    NUMBER,
    TEXT,
    TEXT_OR_NULL,
    array,
    one_of,
    record,
)
from service.schemas.runs import AUDIT_RECORD, RUN_RECORD
from service.seeding import SeedState

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
OPS_SNAPSHOT = record(
    {
        "uptime_s": NUMBER,
        "build": record({"version": TEXT, "git_sha": TEXT_OR_NULL}),
        "ready": BOOLEAN,
        "seed": SEED_PROGRESS,
        "traffic": {**array(_TRAFFIC), "description": "per route and method, API first"},
        "history": {**_HISTORY, "description": "the last 15 minutes, every 10 s"},
        "db": record(
            {"up": BOOLEAN, "status_rows": COUNT, "reason": TEXT},
            optional=("status_rows", "reason"),
        ),
        "audit": {**array(AUDIT_RECORD), "description": "the newest entries"},
        "runs": {**array(RUN_RECORD), "description": "the newest runs"},
        "documents": {
            "oneOf": [SYNC_STATUS, SYNC_SUMMARY, {"type": "null"}],
            "description": "the sync as /admin/sync shows it to an admin token, as /health "
            "shows it to anyone else (the page is open unless --auth-reads)",
        },
    },
    optional=("audit", "runs"),
)
