"""A corrupted database file at start: one clear error line, a non-zero exit, nothing
written to the file, and ``bobgen doctor`` names the problem."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BOBGEN


def seeded_single_file(db_path: Path, rows: int = 5000) -> None:
    subprocess.run(
        [*BOBGEN, "seed", "--db", str(db_path), "--rows", str(rows)],
        check=True,
        capture_output=True,
    )
    with sqlite3.connect(db_path) as conn:  # everything in the main file, no WAL beside it
        conn.execute("PRAGMA journal_mode = DELETE")


def smash_a_table_page(db_path: Path) -> None:
    """Overwrite the middle of leaf pages of the status table's b-tree: found by asking
    SQLite (dbstat), since which page numbers they got depends on how the seed's writes
    interleaved with the audit log's (guessed numbers sometimes hit free pages)."""
    with sqlite3.connect(db_path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'status' AND pagetype = 'leaf' "
                "ORDER BY pageno LIMIT 4"
            )
        ]
    assert len(leaves) == 4
    with db_path.open("r+b") as f:
        for page in leaves:
            f.seek((page - 1) * page_size + 8)
            f.write(b"\xa5" * (page_size - 16))


def garbage(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.write_bytes(b"definitely not SQLite " * 2000)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [garbage, smash_a_table_page], ids=["garbage", "bad-page"])
def test_corrupt_file_at_start_is_one_clear_error(db_path: Path, damage: Any) -> None:
    if damage is smash_a_table_page:
        seeded_single_file(db_path)
    damage(db_path)
    before = db_path.read_bytes()
    served = subprocess.run(
        [*BOBGEN, "serve", "--db", str(db_path), "--port", "0", "--seed-rows", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode != 0
    assert "Traceback" not in served.stderr
    errors = [line for line in served.stderr.splitlines() if line.startswith("bobgen: error:")]
    assert len(errors) == 1, served.stderr
    assert "bobgen doctor" in errors[0]
    assert db_path.read_bytes() == before  # nothing was migrated or written into it

    doctor = subprocess.run(
        [*BOBGEN, "doctor", "--db", str(db_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert doctor.returncode == 1
    report = json.loads(doctor.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed
    assert failed[0]["name"] == "integrity"
    assert failed[0]["detail"]
