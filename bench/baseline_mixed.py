"""The soak's baseline: the hand-tuned reader and the minimal writer in one process.

The soak's mix (random-offset pages, rows by random id, inserts) served the fastest honest
way: ``bench/baseline_reader.py``'s handlers on one aiosqlite connection, and
``bench/baseline_writer.py``'s INSERT + COMMIT per request on a second (WAL, so reads and the
write do not wait for each other); uvloop, no middleware, no auth, no validation, no audit, no
metrics. ``bench/soak.py --against baseline`` soaks it exactly as it soaks BobGen, so that what
the host does to any aiohttp server at 70 % of its measured maximum can be told apart from what
BobGen does (docs/performance.md).

With ``--inline`` every query runs on the event loop's thread through one plain sqlite3
connection: no thread hops, so its maximum is bound by its CPU, as BobGen's is, instead of by
the round trips of aiosqlite's one thread per connection (``bench/soak.py --against inline``).

    python bench/baseline_mixed.py PORT DB_PATH [--inline]
"""

import sqlite3
import sys
from collections.abc import AsyncIterator

import aiosqlite
import baseline_reader
import baseline_writer
import orjson
from aiohttp import web

INLINE = web.AppKey("inline", sqlite3.Connection)


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def connections(app: web.Application) -> AsyncIterator[None]:
    reader = await aiosqlite.connect(sys.argv[2])
    writer = await aiosqlite.connect(sys.argv[2])
    await writer.execute("PRAGMA journal_mode = WAL")
    await writer.execute("PRAGMA synchronous = NORMAL")
    app[baseline_reader.DB], app[baseline_writer.DB] = reader, writer
    yield
    await reader.close()
    await writer.close()


async def inline_connection(app: web.Application) -> AsyncIterator[None]:
    db = sqlite3.connect(sys.argv[2])
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    app[INLINE] = db
    yield
    db.close()


async def inline_page(request: web.Request) -> web.Response:
    sql = f"SELECT {baseline_reader.COLUMNS} FROM status ORDER BY id LIMIT ? OFFSET ?"
    params = (int(request.query.get("limit", 50)), int(request.query.get("offset", 0)))
    rows = request.app[INLINE].execute(sql, params).fetchall()
    items = [dict(zip(baseline_reader.NAMES, r, strict=True)) for r in rows]
    return web.Response(body=orjson.dumps({"items": items}), content_type="application/json")


async def inline_row(request: web.Request) -> web.Response:
    sql = f"SELECT {baseline_reader.COLUMNS} FROM status WHERE id = ?"
    found = request.app[INLINE].execute(sql, (int(request.match_info["id"]),)).fetchone()
    if found is None:
        raise web.HTTPNotFound()
    body = orjson.dumps(dict(zip(baseline_reader.NAMES, found, strict=True)))
    return web.Response(body=body, content_type="application/json")


async def inline_create(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    db = request.app[INLINE]
    values = (body["uptime"], body["version"], body["latency"], body["error_rate"])
    cursor = db.execute(baseline_writer.INSERT, values)
    db.commit()
    return web.Response(
        body=orjson.dumps({"id": cursor.lastrowid}), status=201, content_type="application/json"
    )


def main() -> None:
    app = web.Application()
    app.router.add_get("/readyz", ready)
    if "--inline" in sys.argv[3:]:
        app.cleanup_ctx.append(inline_connection)
        handlers = (inline_page, inline_row, inline_create)
    else:
        app.cleanup_ctx.append(connections)
        handlers = (baseline_reader.page, baseline_reader.row, baseline_writer.create)
    app.router.add_get("/bobgen/status", handlers[0])
    app.router.add_get("/bobgen/status/{id}", handlers[1])
    app.router.add_post("/bobgen/status", handlers[2])
    baseline_reader.serve(app)


if __name__ == "__main__":
    main()
