"""SIGTERM as orchestrators expect it: a drain first (``/readyz`` 503, every request still
served, systemd told STOPPING=1), then the listener closes, and requests in flight finish."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp

from tests.support import eventually
from tests.support.auth import WRITER_TOKEN, plant_test_tokens
from tests.support.server import Server

GRACE_S = 1.5


async def _readyz(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/readyz") as resp:
        return resp.status


async def test_sigterm_drains_then_closes_and_requests_in_flight_finish(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "bobgen.db"
    db_path.parent.mkdir()
    plant_test_tokens(db_path)
    notify = tmp_path / "notify.sock"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(notify))
    systemd.setblocking(False)
    server = Server(
        db_path,
        args=["--shutdown-grace-s", str(GRACE_S)],
        env={**os.environ, "NOTIFY_SOCKET": str(notify)},
    )
    await server.start()
    body = json.dumps({"uptime": 1, "version": "in-flight", "latency": 1, "error_rate": 0})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # A request in flight: headers and half of its body sent before the SIGTERM.
        head = (
            f"POST /bobgen/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRITER_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body[:10].encode())
        await writer.drain()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: _is_503(session, server), what="/readyz 503 after SIGTERM")
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200  # new requests are still served while draining
        assert time.monotonic() - signalled < GRACE_S  # all of that inside the grace
        messages = []
        while True:
            try:
                messages.append(systemd.recv(256).decode())
            except BlockingIOError:
                break
        assert "STOPPING=1" in messages
        writer.write(body[10:].encode())  # the request in flight completes
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        assert status_line.startswith(b"HTTP/1.1 201"), status_line
    finally:
        writer.close()
        systemd.close()
    assert await server.wait_exit() == 0
    assert "Traceback" not in server.log()


async def _is_503(session: aiohttp.ClientSession, server: Server) -> bool:
    return await _readyz(session, server.url) == 503
