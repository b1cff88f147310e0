"""Schemas of the admin API."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

MAX_SEED_ROWS = 10_000_000


class SeedRequestSchema(Schema):
    rows = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=0, max=MAX_SEED_ROWS)
    )
    batch_size = fields.Integer(
        load_default=None, strict=True, validate=validate.Range(min=1, max=100_000)
    )
