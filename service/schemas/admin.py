"""Schemas of the admin API."""

from __future__ import annotations

from marshmallow import Schema, validate

from service.schemas.common import JsonInteger

MAX_SEED_ROWS = 10_000_000


class SeedRequestSchema(Schema):
    rows = JsonInteger(required=True, validate=validate.Range(min=0, max=MAX_SEED_ROWS))
    batch_size = JsonInteger(load_default=None, validate=validate.Range(min=1, max=100_000))
