"""Schemas of the tokens API (``/tokens``, admin only)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from service.domain.auth import ALL_SCOPES
from service.schemas.common import MAX_ROW_ID, Cursor, TextInteger, limit_field

# A user name lands in audit rows and log lines: printable, no control characters.
USER = validate.Regexp(
    r"^[^\x00-\x1f\x7f]{1,100}$", error="1 to 100 characters, no control characters."
)
NAME = validate.Regexp(
    r"^[^\x00-\x1f\x7f]{0,200}$", error="At most 200 characters, no control ones."
)


class TokenCreateSchema(Schema):
    user = fields.String(
        required=True, validate=USER, metadata={"description": "who the token is for (audited)"}
    )
    scopes = fields.List(
        fields.String(validate=validate.OneOf(sorted(str(s) for s in ALL_SCOPES))),
        required=True,
        validate=validate.Length(min=1, max=len(ALL_SCOPES)),
        metadata={"description": "independent scopes: read, write, admin"},
    )
    name = fields.String(
        load_default="", validate=NAME, metadata={"description": "what the token is for"}
    )


class TokenIdSchema(Schema):
    id = TextInteger(required=True, validate=validate.Range(min=1, max=MAX_ROW_ID))


class TokenListQuerySchema(Schema):
    limit = limit_field()
    cursor = Cursor(load_default=None)


_WHEN = {"type": ["string", "null"], "description": "ISO-8601, UTC"}
# A token's metadata as GET /tokens lists it; POST adds the secret, "token", once.
TOKEN_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["id", "user", "name", "scopes", "created_at", "last_used_at", "revoked_at"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "string", "description": "comma-separated: read, write, admin"},
        "created_at": {"type": "string", "description": "ISO-8601, UTC"},
        "last_used_at": _WHEN,
        "revoked_at": _WHEN,
    },
    "additionalProperties": False,
}
NEW_TOKEN: dict[str, Any] = {
    **TOKEN_RECORD,
    "required": [*TOKEN_RECORD["required"], "token"],
    "properties": {
        **TOKEN_RECORD["properties"],
        "token": {"type": "string", "pattern": "^bgt_", "description": "shown this once"},
    },
}
