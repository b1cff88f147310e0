"""Files BobGen writes are its own user's only (issue 16, item 4): the live SQLite files (they
hold token hashes and every row), the initial token file and backups, as a real server and
the real CLI make them."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.helpers import run_cli
from tests.support.server import Server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_its_wal_shm_and_token_file_are_0600(tmp_path: Path) -> None:
    db = tmp_path / "data" / "bobgen.db"
    server = Server(db, log_dir=tmp_path)
    names = ["bobgen.db", "bobgen.db-wal", "bobgen.db-shm", "bobgen.db.admin-token"]
    try:
        await server.start()  # running: the WAL and the shared memory file exist
        modes = {name: oct(mode(db.with_name(name))) for name in names}
    finally:
        await server.stop()
    assert modes == dict.fromkeys(names, "0o600")
    assert mode(db.parent) & 0o077 == 0  # the folder it made, too


def test_a_backup_is_0600(tmp_path: Path) -> None:
    db = tmp_path / "bobgen.db"
    assert run_cli("migrate", "--db", str(db)).returncode == 0
    backup = tmp_path / "backup.db"
    result = run_cli("db", "backup", str(backup), "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert oct(mode(backup)) == "0o600"
    assert oct(mode(db)) == "0o600"
