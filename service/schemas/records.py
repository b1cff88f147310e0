"""JSON Schema pieces for what the API answers.

Requests are marshmallow schemas because the server loads them; an answer is a row or a
snapshot the server builds, so it is described here in JSON Schema directly, once per shape,
and tests/test_openapi.py holds every answer of a walk over all routes to these descriptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TEXT: dict[str, Any] = {"type": "string"}
TEXT_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
ROW_ID: dict[str, Any] = {"type": "integer", "minimum": 1}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
HEX_ID: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
ROW_VERSION: dict[str, Any] = {
    "type": "integer",
    "minimum": 1,
    "description": "the row version (ETag)",
}
WHEN: dict[str, Any] = {"type": "string", "format": "date-time", "description": "ISO-8601, UTC"}
WHEN_OR_NULL: dict[str, Any] = {
    "type": ["string", "null"],
    "format": "date-time",
    "description": "ISO-8601, UTC; null until it happens",
}
JSON_OBJECT: dict[str, Any] = {"type": "object", "description": "free-form JSON, as sent"}


def one_of(values: Iterable[Any], *, null: bool = False) -> dict[str, Any]:
    """A string from ``values`` (an enum class or any iterable), or null when ``null``."""
    names: list[Any] = sorted(str(v) for v in values)
    if null:
        return {"type": ["string", "null"], "enum": [*names, None]}
    return {"type": "string", "enum": names}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def record(
    properties: dict[str, Any], *, optional: Iterable[str] = (), description: str = ""
) -> dict[str, Any]:
    """An object with exactly these properties, each present unless named in ``optional``."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": sorted(set(properties) - set(optional)),
        "properties": properties,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def extend(base: dict[str, Any], **properties: Any) -> dict[str, Any]:
    """``base`` (a :func:`record`) with more properties, all present."""
    return record({**base["properties"], **properties})
