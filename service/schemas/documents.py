"""Schemas of the documents API."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from service.domain.documents import DocumentType
from service.schemas.common import Cursor, limit_field


def _is_position(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


class DocumentListQuerySchema(Schema):
    type = fields.String(load_default=None, validate=validate.OneOf([str(t) for t in DocumentType]))
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=300))
    limit = limit_field()
    cursor = Cursor(valid=_is_position, load_default=None)


class DocumentIdSchema(Schema):
    id = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{32}$"))


class KindListQuerySchema(Schema):
    limit = limit_field()
    cursor = Cursor(valid=_is_position, load_default=None)


class DocumentNameSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
