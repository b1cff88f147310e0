"""Timestamps are ISO-8601 UTC text with milliseconds and a ``Z``: portable and sortable as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_iso(moment: datetime) -> str:
    """``2026-11-22T09:00:00.000Z`` for any aware datetime."""
    # isoformat is several times faster than strftime, and this runs for every write.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Clock:
    """The time the service reasons with where time is a rule (leases expire by it).

    An object, not a call to ``datetime.now``, so that tests can move time on
    (``tests.helpers.ManualClock``) instead of sleeping through a lease.
    """

    def now(self) -> datetime:
        return datetime.now(UTC)

    def iso(self, seconds_from_now: float = 0.0) -> str:
        """``now`` (plus ``seconds_from_now``) as API text."""
        return utc_iso(self.now() + timedelta(seconds=seconds_from_now))
