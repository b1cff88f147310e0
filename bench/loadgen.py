"""A lean HTTP/1.1 keep-alive client for the soak's load (not a general client).

Why not aiohttp's client: at 1,000-2,000 requests/s it took 40-50 % of a core of this 2-core
host, beside the server it measures, and its own event loop's delays were part of every
latency it reported. This one writes a request and reads the status line, the headers and a
``Content-Length`` body from a pool of keep-alive connections: a fraction of the CPU per
request. It speaks only to BobGen (no chunked bodies, no compression, no redirects), which
answers every request with a ``Content-Length``.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ProtocolError(Exception):
    """The answer was not the HTTP/1.1 this client reads."""


class _Closed(ConnectionError):
    """The server had closed the connection before it answered (an idle keep-alive)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send one request; the status and whether the connection may be used again."""
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise _Closed("the server closed the connection")
        if not status_line.startswith(b"HTTP/1.1 "):
            raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:40]!r}")
        status = int(status_line[9:12])
        length, reusable = 0, True
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                reusable = False
            elif name == b"transfer-encoding":
                raise ProtocolError("chunked answers are not read by this client")
        await self.reader.readexactly(length)
        return status, reusable

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """Up to ``limit`` keep-alive connections to one server; a request waits for a free one
    when all are busy (as aiohttp's connector limit does)."""

    def __init__(self, host: str, port: int, headers: dict[str, str], limit: int = 200) -> None:
        self.host, self.port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head += f"Host: {host}:{port}\r\n"
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(limit)

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        """The answer's status; raises OSError or ProtocolError when there is none."""
        request = (
            f"{method} {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self._slots:
            if self._idle:
                try:
                    return await self._exchange(self._idle.pop(), request)
                except _Closed:
                    pass  # closed while idle, so never read: send it again, on a new one
            return await self._exchange(await self._open(), request)

    async def _exchange(self, conn: _Connection, request: bytes) -> int:
        try:
            status, reusable = await conn.exchange(request)
        except BaseException:
            conn.close()  # its state is unknown: never reuse it
            raise
        if reusable:
            self._idle.append(conn)
        else:
            conn.close()
        return status

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
