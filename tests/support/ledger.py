"""What the fault-injection tests write and how they check it afterwards, straight from the
SQLite file: every acknowledged write present exactly once, and the file intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.support.auth import WRITER_TOKEN, bearer

WRITE_HEADERS = bearer(WRITER_TOKEN)


def status_body(marker: str) -> dict[str, Any]:
    return {"uptime": 99.5, "version": marker, "latency": 1.0, "error_rate": 0.0}


def rows_by_version(db_path: Path, prefix: str) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT version, id FROM status WHERE version LIKE ?", (prefix + "%",)
        ).fetchall()
    return dict(rows)


def audit_ids(db_path: Path) -> list[int]:
    """The status ids named by ``status.created`` audit rows (with repeats, if any)."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT json_extract(data_json, '$.id') FROM audit_log WHERE event = 'status.created'"
        ).fetchall()
    return [r[0] for r in rows]


def integrity(db_path: Path) -> list[str]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
