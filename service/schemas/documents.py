"""Schemas of the documents API."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from service.db.search import words
from service.domain.documents import DocumentType
from service.repositories.documents import JSON_PATH
from service.schemas.common import Cursor, is_text, keyset, limit_field
from service.schemas.records import HEX_ID, JSON_OBJECT, TEXT, WHEN, one_of, record

_is_position = keyset(is_text)  # (name, id)


FIELD_PREFIX = "field."
MAX_FIELD_FILTERS = 5


def _has_a_word(value: str) -> None:
    if not words(value):
        raise ValidationError("Give at least one word to search for.")


class DocumentListQuerySchema(Schema):
    """``type``, ``name``, ``q`` (full text), ``field.<path>=<value>`` filters, paging.

    ``field.*`` parameters are not fields of this schema (their names are open): they are
    collected and checked in ``pre_load`` and handed on as ``field_filters``.
    """

    type = fields.String(load_default=None, validate=validate.OneOf([str(t) for t in DocumentType]))
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=300))
    q = fields.String(load_default=None, validate=[validate.Length(max=200), _has_a_word])
    limit = limit_field()
    cursor = Cursor(valid=_is_position, load_default=None)
    field_filters = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)

    @pre_load
    def collect_field_filters(self, data: Any, **kwargs: Any) -> Any:
        if not hasattr(data, "items"):
            return data
        plain: dict[str, Any] = {}
        filters: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        for key, value in data.items():
            if not key.startswith(FIELD_PREFIX):
                plain[key] = value
                continue
            path = key[len(FIELD_PREFIX) :]
            if not JSON_PATH.fullmatch(path):
                errors[key] = ["Not a field path: dotted names of letters, digits and _."]
            elif not isinstance(value, str) or not 1 <= len(value) <= 300:
                errors[key] = ["Give a value of 1 to 300 characters."]
            else:
                filters[path] = value
        if len(filters) > MAX_FIELD_FILTERS:
            errors["field_filters"] = [f"At most {MAX_FIELD_FILTERS} field filters."]
        if "field_filters" in plain:
            errors["field_filters"] = ["Unknown field."]
        if errors:
            raise ValidationError(errors)
        plain["field_filters"] = filters
        return plain

    @validates_schema
    def no_cursor_with_q(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("q") and data.get("cursor"):
            raise ValidationError({"cursor": ["A search (q) returns one page, best first."]})


class DocumentIdSchema(Schema):
    id = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{32}$"))


class KindListQuerySchema(Schema):
    limit = limit_field()
    cursor = Cursor(valid=_is_position, load_default=None)


class DocumentNameSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))


DOCUMENT_RECORD = record(
    {
        "id": {**HEX_ID, "description": "stable: derived from the type and the file's path"},
        "type": one_of(DocumentType),
        "name": {**TEXT, "description": "the file's name field, or its file name without suffix"},
        "document": {**JSON_OBJECT, "description": "the file's content, parsed"},
        "file_path": {**TEXT, "description": "relative to its documents root"},
        "file_modified": WHEN,
        "content_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "created_at": WHEN,
        "updated_at": WHEN,
    }
)
PERSONA = {
    "type": "object",
    "description": "the persona file's JSON object, as written (its keys are the file's own)",
}
PROMPT_TEMPLATE = record(
    {
        "metadata": {**JSON_OBJECT, "description": "the YAML front matter, as JSON"},
        "template": {**TEXT, "description": "the text after the front matter"},
    }
)
