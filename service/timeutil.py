"""Timestamps are ISO-8601 UTC text with milliseconds and a ``Z``: portable and sortable as text."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_iso(moment: datetime) -> str:
    """``2026-11-22T09:00:00.000Z`` for any aware datetime."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utc_now() -> str:
    return utc_iso(datetime.now(UTC))
