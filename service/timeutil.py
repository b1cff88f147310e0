"""Timestamps are ISO-8601 UTC text with milliseconds and a ``Z``: portable and sortable as text."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_iso(moment: datetime) -> str:
    """``2026-11-22T09:00:00.000Z`` for any aware datetime."""
    # isoformat is several times faster than strftime, and this runs for every write.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
