"""Schemas of runs, run steps and the audit log."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.domain.runs import INITIAL_STATUSES, RUN_STATUSES, StepStatus
from service.schemas.common import (
    MAX_ROW_ID,
    Cursor,
    TextInteger,
    UtcDateTime,
    is_timestamp,
    keyset,
    limit_field,
)
from service.schemas.records import (
    HEX_ID,
    JSON_OBJECT,
    ROW_ID,
    TEXT,
    TEXT_OR_NULL,
    WHEN,
    WHEN_OR_NULL,
    array,
    extend,
    one_of,
    record,
)

HEX_SHA = validate.Regexp(r"^[0-9a-f]{7,64}$", error="Must be 7 to 64 lowercase hex digits.")
SHA256 = validate.Regexp(r"^[0-9a-f]{64}$", error="Must be 64 lowercase hex digits.")
NAME = validate.Length(min=1, max=128)
MAX_JSON_KEYS = 100


def _small_object(value: dict[str, Any]) -> None:
    if len(value) > MAX_JSON_KEYS:
        raise ValidationError(f"At most {MAX_JSON_KEYS} keys.")


_is_run_position = keyset(is_timestamp)  # (created_at, run_id)


class RunCreateSchema(Schema):
    args = fields.Dict(keys=fields.String(), load_default=dict, validate=_small_object)
    git_sha = fields.String(load_default=None, allow_none=True, validate=HEX_SHA)
    config_hash = fields.String(load_default=None, allow_none=True, validate=SHA256)


class RunIdSchema(Schema):
    run_id = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{32}$"))


class StepPathSchema(RunIdSchema):
    step_id = TextInteger(required=True, validate=validate.Range(min=1, max=MAX_ROW_ID))


class RunListQuerySchema(Schema):
    limit = limit_field()
    cursor = Cursor(valid=_is_run_position, load_default=None)
    since = UtcDateTime(load_default=None)
    git_sha = fields.String(load_default=None, validate=HEX_SHA)
    config_hash = fields.String(load_default=None, validate=SHA256)


class StepCreateSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    status = fields.Enum(
        StepStatus,
        by_value=True,
        load_default=StepStatus.PENDING,
        validate=validate.OneOf(INITIAL_STATUSES, error="A new step is pending or running."),
    )
    stats = fields.Dict(keys=fields.String(), load_default=dict, validate=_small_object)


class StepUpdateSchema(Schema):
    # Absent is None, null is refused: the document can then say "at least one field".
    status = fields.Enum(StepStatus, by_value=True, load_default=None, allow_none=False)
    stats = fields.Dict(
        keys=fields.String(), load_default=None, allow_none=False, validate=_small_object
    )

    @validates_schema
    def _something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("status") is None and data.get("stats") is None:
            raise ValidationError("Give a status, stats, or both.", "_schema")


class AuditQuerySchema(Schema):
    limit = limit_field()
    cursor = Cursor(load_default=None)
    run_id = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    scope = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    event = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    since = UtcDateTime(load_default=None)


RUN_RECORD = record(
    {
        "run_id": HEX_ID,
        "created_at": WHEN,
        "git_sha": TEXT_OR_NULL,
        "config_hash": TEXT_OR_NULL,
        "args": JSON_OBJECT,
    }
)
STEP_RECORD = record(
    {
        "step_id": ROW_ID,
        "run_id": HEX_ID,
        "name": TEXT,
        "started_at": WHEN_OR_NULL,
        "finished_at": WHEN_OR_NULL,
        "status": one_of(StepStatus),
        "stats": JSON_OBJECT,
    }
)
RUN_WITH_STEPS = extend(
    RUN_RECORD,
    steps=array(STEP_RECORD),
    status={**one_of(RUN_STATUSES), "description": "derived from the steps, never stored"},
)
AUDIT_RECORD = record(
    {
        "id": ROW_ID,
        "ts": WHEN,
        "level": TEXT,
        "actor": {**TEXT, "description": "the token's user, or system for the service's jobs"},
        "run_id": TEXT_OR_NULL,
        "scope": TEXT,
        "event": TEXT,
        "message": TEXT,
        "data": JSON_OBJECT,
    }
)
