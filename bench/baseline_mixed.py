"""The soak's baseline: the hand-tuned reader and the minimal writer in one process.

The soak's mix (random-offset pages, rows by random id, inserts) served the fastest honest
way: ``bench/baseline_reader.py``'s handlers on one aiosqlite connection, and
``bench/baseline_writer.py``'s INSERT + COMMIT per request on a second (WAL, so reads and the
write do not wait for each other); uvloop, no middleware, no auth, no validation, no audit, no
metrics. ``bench/soak.py --against baseline`` soaks it exactly as it soaks BobGen, so that what
the host does to any aiohttp server at 70 % of its measured maximum can be told apart from what
BobGen does (docs/performance.md).

    python bench/baseline_mixed.py PORT DB_PATH
"""

import sys
from collections.abc import AsyncIterator

import aiosqlite
import baseline_reader
import baseline_writer
from aiohttp import web


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


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(connections)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/bobgen/status", baseline_reader.page)
    app.router.add_get("/bobgen/status/{id}", baseline_reader.row)
    app.router.add_post("/bobgen/status", baseline_writer.create)
    baseline_reader.serve(app)


if __name__ == "__main__":
    main()
