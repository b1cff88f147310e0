"""Pieces shared by every paginated list: limits, offsets and opaque keyset cursors."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from marshmallow import Schema, ValidationError, fields, validate

# Fixed path segments beside an ``{id}`` segment (``/context/totals``, ``/worktrees/reserve``).
# The id routes do not match them (``id_route`` in api/common.py), and no id may take one of
# these names: an item created as "totals" answered 201 and could never be read again.
RESERVED_IDS = frozenset({"totals", "reserve"})

# Integer keys (status, steps, tokens) are 32-bit on PostgreSQL: a larger id names no row,
# and is refused as bad input rather than sent to the database.
MAX_ROW_ID = 2**31 - 1

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_OFFSET = 10_000_000


def not_reserved(value: str) -> None:
    """Refuse an id that names a route (:data:`RESERVED_IDS`)."""
    if value in RESERVED_IDS:
        raise ValidationError(f"'{value}' is reserved: it names a route; choose another id.")


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_ROW_ID


# The parts of a keyset position, checked before they reach SQL: a cursor is opaque, but a
# client can still make one, and a wrong type or size in a bound parameter is a driver error.
MAX_CURSOR_TEXT = 300
_TIMESTAMP_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_ROW_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
PositionPart = Callable[[Any], bool]


def is_text(value: Any) -> bool:
    """A sort value of a text column: a string of at most 300 characters, without NUL."""
    return isinstance(value, str) and len(value) <= MAX_CURSOR_TEXT and "\x00" not in value


def is_timestamp(value: Any) -> bool:
    """A stored timestamp, exactly as the API writes them."""
    return isinstance(value, str) and _TIMESTAMP_TEXT.fullmatch(value) is not None


def is_row_key(value: Any) -> bool:
    """A text id (client-chosen ids and server-made hex alike)."""
    return isinstance(value, str) and _ROW_KEY.fullmatch(value) is not None


def keyset(first: PositionPart, second: PositionPart = is_row_key) -> Callable[[Any], bool]:
    """A ``[sort value, id]`` position whose parts pass ``first`` and ``second``."""
    return lambda v: isinstance(v, list) and len(v) == 2 and first(v[0]) and second(v[1])


def cursor_fits_sort(
    data: dict[str, Any], checks: dict[str, PositionPart], default: PositionPart = is_text
) -> None:
    """Refuse a cursor whose sort value is not of the kind its ``sort`` column holds (a name
    where a timestamp belongs): it was not made by the server for this order."""
    position = data.get("cursor")
    if position is None:
        return
    column = str(data.get("sort", "")).removeprefix("-")
    if not checks.get(column, default)(position[0]):
        raise ValidationError(
            "Not a valid cursor for this sort; use the value of 'next' as is.", "cursor"
        )


class Cursor(fields.Field[Any]):
    """An opaque keyset cursor: URL-safe base64 of ``{"after": <position>}``.

    Opaque so clients cannot grow to depend on its content, and so the encoding can change.
    ``valid`` checks the decoded position (by default: a non-negative integer id).
    """

    default_error_messages = {"invalid": "Not a valid cursor; use the value of 'next' as is."}

    def __init__(self, valid: Callable[[Any], bool] = _is_id, **kwargs: Any):
        super().__init__(**kwargs)
        self.valid = valid

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii") + b"=" * (-len(value) % 4))
            after = orjson.loads(raw)["after"]
        except (AttributeError, UnicodeError, binascii.Error, ValueError, KeyError, TypeError):
            raise self.make_error("invalid") from None
        if not self.valid(after):
            raise self.make_error("invalid")
        return after


def encode_cursor(after: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).rstrip(b"=").decode()


class FieldList(fields.Field[list[str]]):
    """A comma-separated list of names, each of which must be in ``choices``."""

    def __init__(self, choices: tuple[str, ...], **kwargs: Any):
        super().__init__(**kwargs)
        self.choices = choices

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, str):
            raise ValidationError("Must be a comma-separated list of field names.")
        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names:
            raise ValidationError("Name at least one field.")
        unknown = sorted(set(names) - set(self.choices))
        if unknown:
            raise ValidationError(
                f"Unknown field(s): {', '.join(unknown)}. Known: {', '.join(self.choices)}."
            )
        return list(dict.fromkeys(names))  # de-duplicated, order kept


_ASCII_INTEGER = re.compile(r"-?[0-9]{1,20}")


class TextInteger(fields.Integer):
    """An integer written in a URL (a path segment, a query value): ASCII digits only.
    Python's ``int`` also reads U+0661 (Arabic-Indic one), U+FF11 (fullwidth one), `` 1`` and
    ``+1``; an id or a limit is none of those."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, str) and not _ASCII_INTEGER.fullmatch(value):
            raise self.make_error("invalid", input=value)
        return int(super()._validated(value))


class UtcDateTime(fields.AwareDateTime):
    """An ISO-8601 time with its zone, loaded as UTC. A zone that moves it outside the
    calendar (``0001-01-01T00:00:00+23:59``) is out of range, a 400, not an overflow later."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValidationError(
                "Out of range: the time and its zone leave the calendar."
            ) from None


class JsonInteger(fields.Integer):
    """A JSON integer: an int, or a number with no fractional part (``472.0``: JSON Schema
    calls it an integer, so clients generated from the OpenAPI document may send it). Never a
    boolean and never a string (``strict`` marshmallow would refuse ``472.0`` as well)."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value) is not int:
            raise self.make_error("invalid", input=value)
        return int(super()._validated(value))


# What marshmallow's URL validator accepts, narrowed to plain ASCII: a dotted host with a
# top-level domain, an optional port, an optional path.
HTTP_URL_PATTERN = (
    r"^https?://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,6}"
    r"(:[0-9]{1,5})?(/[!-~]*)?$"
)


def http_url(**kwargs: Any) -> fields.Url:
    """An http(s) URL of at most 2,048 characters; the document says so with a pattern."""
    return fields.Url(
        schemes={"http", "https"},
        validate=validate.Length(max=2048),
        metadata={"pattern": HTTP_URL_PATTERN},
        **kwargs,
    )


class StrictBoolean(fields.Boolean):
    """JSON ``true`` or ``false`` only. ``truthy={True}`` is not enough: ``0 == False`` and
    they hash alike, so ``"pinned": 0`` passed a set-membership check as false."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


def query_boolean(**kwargs: Any) -> fields.Boolean:
    """A query-string flag: the strings ``true`` or ``false``, nothing else (no 1/0/yes)."""
    return fields.Boolean(truthy={"true"}, falsy={"false"}, **kwargs)


def limit_field() -> fields.Integer:
    return TextInteger(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"},
    )


class PageQuerySchema(Schema):
    """``limit`` + either ``offset`` or ``cursor``. Unknown query parameters are rejected."""

    limit = limit_field()
    offset = TextInteger(load_default=None, validate=validate.Range(min=0, max=MAX_OFFSET))
    cursor = Cursor(load_default=None)

    def validate_page(self, data: dict[str, Any]) -> None:
        if data.get("offset") is not None and data.get("cursor") is not None:
            raise ValidationError("Use either offset or cursor, not both.", "cursor")
