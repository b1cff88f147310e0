"""A full disk: writes fail with a clear JSON error, nothing committed is lost, the file stays
sound, and writes work again once space is freed, without a restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.auth import plant_test_tokens
from tests.support.ledger import WRITE_HEADERS, integrity, rows_by_version, status_body

FS_SIZE = "12m"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs of our own (root only): the database lives on it, alone."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the filesystem with one file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (65536, 4096, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


@pytest.mark.slow
async def test_disk_full_fails_writes_cleanly_and_recovers_without_restart(
    small_fs: Path, make_server: Any
) -> None:
    db_path = small_fs / "bobgen.db"
    plant_test_tokens(db_path)
    server = await make_server(db_path=db_path)
    url = server.url + "/bobgen/status"
    acknowledged: dict[str, int] = {}
    async with aiohttp.ClientSession(headers=WRITE_HEADERS) as session:

        async def post(marker: str) -> tuple[int, dict[str, Any]]:
            async with session.post(url, json=status_body(marker)) as resp:
                body = await resp.json()
                if resp.status == 201:
                    acknowledged[marker] = body["id"]
                if resp.status == 507:  # docs/reliability.md: retry once space is freed
                    assert int(resp.headers["Retry-After"]) > 0
                return resp.status, body

        for i in range(50):
            assert (await post(f"before-{i}"))[0] == 201
        filler = fill(small_fs)
        refusals: list[tuple[int, dict[str, Any]]] = []
        for i in range(3000):  # the WAL may still have room for a while: write until refused
            status, body = await post(f"full-{i}")
            assert status in (201, 507), body  # the documented answer, not any 5xx
            if status != 201:
                refusals.append((status, body))
                if len(refusals) >= 5:
                    break
        assert refusals, "the disk never filled up"
        for _status, body in refusals:
            assert body["error"]["code"] == "insufficient_storage"
            assert body["error"]["message"]
        reads = await session.get(server.url + "/bobgen/status?limit=5")
        assert reads.status == 200  # reads go on while the disk is full

        filler.unlink()
        for i in range(20):
            assert (await post(f"after-{i}"))[0] == 201  # no restart needed
    assert server.proc.returncode is None
    stored = rows_by_version(db_path, "")
    assert {m: stored.get(m) for m in acknowledged} == acknowledged  # nothing acknowledged lost
    assert integrity(db_path) == ["ok"]
