"""Hand-tuned reader baseline: aiohttp + uvloop + one aiosqlite connection + orjson.

No middleware, no validation beyond int(), no pool: the fastest honest way to serve the same
pages and rows from the same file. BobGen's read paths are measured as ratios of this.

    python bench/baseline_reader.py PORT DB_PATH
"""

import sys

import aiosqlite
import orjson
import uvloop
from aiohttp import web

COLUMNS = (
    "id, uptime, version, latency, error_rate, last_run, blocks, runbook_link, "
    "dashboard_link, created_at, updated_at"
)
NAMES = [c.strip() for c in COLUMNS.split(",")]
DB = web.AppKey("db", aiosqlite.Connection)


async def page(request: web.Request) -> web.Response:
    limit = int(request.query.get("limit", 50))
    if "after" in request.query:
        sql = f"SELECT {COLUMNS} FROM status WHERE id > ? ORDER BY id LIMIT ?"
        params: tuple[int, ...] = (int(request.query["after"]), limit)
    else:
        sql = f"SELECT {COLUMNS} FROM status ORDER BY id LIMIT ? OFFSET ?"
        params = (limit, int(request.query.get("offset", 0)))
    rows = await request.app[DB].execute_fetchall(sql, params)
    items = [dict(zip(NAMES, r, strict=True)) for r in rows]
    return web.Response(body=orjson.dumps({"items": items}), content_type="application/json")


async def row(request: web.Request) -> web.Response:
    rows = await request.app[DB].execute_fetchall(
        f"SELECT {COLUMNS} FROM status WHERE id = ?", (int(request.match_info["id"]),)
    )
    if not rows:
        raise web.HTTPNotFound()
    body = orjson.dumps(dict(zip(NAMES, rows[0], strict=True)))
    return web.Response(body=body, content_type="application/json")


async def connection(app: web.Application):  # type: ignore[no-untyped-def]
    app[DB] = await aiosqlite.connect(sys.argv[2])
    yield
    await app[DB].close()


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(connection)
    app.router.add_get("/status", page)
    app.router.add_get("/status/{id}", row)
    serve(app)


def serve(app: web.Application) -> None:
    """On 127.0.0.1:PORT (the first argument), uvloop, no access log: as every baseline built
    on these handlers runs."""
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
