"""Schemas of the tokens API (``/tokens``, admin only)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.domain.auth import ALL_SCOPES
from service.schemas.common import Cursor, limit_field

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
    id = fields.Integer(required=True, validate=validate.Range(min=1, max=2**63 - 1))


class TokenListQuerySchema(Schema):
    limit = limit_field()
    cursor = Cursor(load_default=None)
