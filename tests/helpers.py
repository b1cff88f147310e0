"""Helpers shared by test modules (imported downward; test modules never import each other)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from service.config import DEFAULT_MIGRATIONS_DIR
from service.timeutil import Clock

BOBGEN = [sys.executable, "-m", "service"]

# A complete, valid status body.
VALID = {
    "uptime": 99.95,
    "version": "2.3.4",
    "latency": 12.5,
    "error_rate": 0.001,
    "last_run": "2026-11-22T10:00:00+01:00",
    "blocks": 3,
    "runbook_link": "https://runbooks.example.com/x",
    "dashboard_link": "https://grafana.example.com/d/x",
}

ALL_MIGRATIONS = sorted(
    p.stem
    for p in DEFAULT_MIGRATIONS_DIR.glob("*.*")
    if p.suffix in (".sql", ".py") and not p.name.endswith(".rollback.sql")
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BOBGEN, *args], capture_output=True, text=True, timeout=120, env=env)


def assert_error(body: dict[str, Any], code: str) -> dict[str, Any]:
    """``body`` is the JSON error envelope with ``code``; returns its details."""
    assert set(body) == {"error"}
    assert set(body["error"]) - {"request_id"} == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]["details"]


class ManualClock(Clock):
    """A clock that moves only when told: lease expiry without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)
