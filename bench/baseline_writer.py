"""Minimal writer baseline: aiohttp + one aiosqlite connection, INSERT + COMMIT per request,
no auth, no validation, no audit row (the issue's definition: plain asyncio, no uvloop).

BobGen's POST (token check, marshmallow validation, audit row in the same transaction) is
measured as a ratio of this: group commit is what lets it come out ahead.

    python bench/baseline_writer.py PORT DB_PATH
"""

import sys

import aiosqlite
import orjson
from aiohttp import web

DB = web.AppKey("db", aiosqlite.Connection)
INSERT = (
    "INSERT INTO status (uptime, version, latency, error_rate, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')"
)


async def create(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    db = request.app[DB]
    cursor = await db.execute(
        INSERT, (body["uptime"], body["version"], body["latency"], body["error_rate"])
    )
    await db.commit()
    return web.Response(
        body=orjson.dumps({"id": cursor.lastrowid}), status=201, content_type="application/json"
    )


async def connection(app: web.Application):  # type: ignore[no-untyped-def]
    db = await aiosqlite.connect(sys.argv[2])
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    app[DB] = db
    yield
    await db.close()


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(connection)
    app.router.add_post("/status", create)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
