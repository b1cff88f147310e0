"""Schemas of the status API."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from service.repositories.status import STATUS_FIELDS
from service.schemas.common import (
    MAX_ROW_ID,
    FieldList,
    JsonInteger,
    PageQuerySchema,
    TextInteger,
    UtcDateTime,
    http_url,
)
from service.timeutil import utc_iso


class StatusListQuerySchema(PageQuerySchema):
    columns = FieldList(STATUS_FIELDS, load_default=None, data_key="fields")
    version = fields.String(load_default=None, validate=validate.Length(min=1, max=64))

    @validates_schema
    def _one_paging_mode(self, data: dict[str, Any], **kwargs: Any) -> None:
        self.validate_page(data)


class StatusIdSchema(Schema):
    id = TextInteger(required=True, strict=False, validate=validate.Range(min=1, max=MAX_ROW_ID))


class StatusCreateSchema(Schema):
    """A new status record. Unknown keys are rejected (marshmallow's default RAISE)."""

    uptime = fields.Float(required=True, validate=validate.Range(min=0, max=100))
    version = fields.String(required=True, validate=validate.Length(min=1, max=64))
    latency = fields.Float(required=True, validate=validate.Range(min=0))
    error_rate = fields.Float(required=True, validate=validate.Range(min=0, max=1))
    last_run = UtcDateTime(load_default=None, allow_none=True)
    blocks = JsonInteger(load_default=0, validate=validate.Range(min=0, max=2**31 - 1))
    runbook_link = http_url(load_default=None, allow_none=True)
    dashboard_link = http_url(load_default=None, allow_none=True)

    @validates_schema(pass_original=True)
    def _no_booleans_as_numbers(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        # JSON true/false would otherwise be accepted as 1.0/0.0.
        bad = {
            k: ["Not a valid number."]
            for k in ("uptime", "latency", "error_rate")
            if isinstance(original.get(k), bool)
        }
        if bad:
            raise ValidationError(bad)

    @post_load
    def _normalize(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data.get("last_run") is not None:
            data["last_run"] = utc_iso(data["last_run"])
        return data


class StatusFieldsQuerySchema(Schema):
    columns = FieldList(STATUS_FIELDS, load_default=None, data_key="fields")


_NUMBER = {"type": "number"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
# A record as GET and POST return it. No property is required: ?fields= picks a subset.
STATUS_RECORD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "uptime": _NUMBER,
        "version": {"type": "string"},
        "latency": _NUMBER,
        "error_rate": _NUMBER,
        "last_run": {**_TEXT_OR_NULL, "description": "ISO-8601, UTC"},
        "blocks": {"type": "integer"},
        "runbook_link": _TEXT_OR_NULL,
        "dashboard_link": _TEXT_OR_NULL,
        "created_at": {"type": "string", "description": "ISO-8601, UTC"},
        "updated_at": {"type": "string", "description": "ISO-8601, UTC"},
    },
    "additionalProperties": False,
}
