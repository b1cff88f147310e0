"""Schemas of the admin API."""

from __future__ import annotations

from marshmallow import Schema, validate

from service.documents.watcher import SyncState
from service.jobs.seeding import SeedState
from service.schemas.common import JsonInteger
from service.schemas.records import (
    COUNT,
    NUMBER,
    TEXT,
    TEXT_OR_NULL,
    WHEN,
    WHEN_OR_NULL,
    array,
    one_of,
    record,
)

MAX_SEED_ROWS = 10_000_000


class SeedRequestSchema(Schema):
    rows = JsonInteger(required=True, validate=validate.Range(min=0, max=MAX_SEED_ROWS))
    batch_size = JsonInteger(load_default=None, validate=validate.Range(min=1, max=100_000))


SEED_PROGRESS = record(
    {
        "state": one_of(SeedState),
        "rows": {**COUNT, "description": "rows in the status table"},
        "target": COUNT,
        "batches": COUNT,
        "inserted": COUNT,
        "started_at": WHEN_OR_NULL,
        "finished_at": WHEN_OR_NULL,
        "error": TEXT_OR_NULL,
        "run_id": TEXT_OR_NULL,
    }
)
SEED_ANSWER = record({"seed": SEED_PROGRESS})
LAST_FULL_SYNC = {
    **record(
        {
            "finished_at": WHEN,
            "seconds": NUMBER,
            "added": COUNT,
            "updated": COUNT,
            "deleted": COUNT,
            "unchanged": COUNT,
            "errors": COUNT,
        }
    ),
    "type": ["object", "null"],
}
SYNC_STATE = {
    **one_of(SyncState),
    "description": "retrying and failed are retried for ever; /health says degraded meanwhile",
}
SYNC_SUMMARY = record(
    {
        "state": SYNC_STATE,
        "reason": TEXT_OR_NULL,
        "errors": COUNT,
        "last_full_sync": LAST_FULL_SYNC,
    }
)
SYNC_STATUS = record(
    {
        "state": SYNC_STATE,
        "reason": TEXT_OR_NULL,
        "roots": {**array(TEXT), "description": "absolute, as resolved at start"},
        "debounce_ms": COUNT,
        "quiet_ms": COUNT,
        "last_full_sync": LAST_FULL_SYNC,
        "pending": {**COUNT, "description": "changed files not yet applied"},
        "events": {"type": "object", "additionalProperties": COUNT},
        "errors": array(
            record({"file": TEXT, "root": TEXT, "reason": TEXT, "since": WHEN}),
        ),
        "documents": {
            "type": "object",
            "additionalProperties": COUNT,
            "description": "documents stored, by type",
        },
    }
)
RELOAD_STARTED = record({"state": {"type": "string", "const": "syncing"}})
