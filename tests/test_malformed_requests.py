"""Requests aiohttp cannot even parse, sent to a real server process: a 400, and one warning
line in the log (no traceback, no forged line), the server unharmed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support import eventually
from tests.support.auth import plant_test_tokens
from tests.support.server import Server


async def test_a_malformed_request_is_one_log_line_not_a_traceback(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "bobgen.db"
    db_path.parent.mkdir()
    plant_test_tokens(db_path)
    server = Server(db_path)
    await server.start()
    try:
        for raw in (
            b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Probe: \x00\r\n\r\n",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Forged: a\r\nINFO fake line\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(raw)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.split()[1] == b"400", status  # aiohttp answers before any handler
            writer.close()
        await eventually(lambda: "malformed request refused" in server.log())
        await server.wait_healthy()  # still serving
    finally:
        assert await server.stop() == 0
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log
    assert not any(line.startswith("INFO fake line") for line in log.splitlines())
