"""The framework ceiling: a bare aiohttp app answering a canned row, no database, no middleware.

The benchmark runs it beside BobGen so every figure can be read as a ratio of what aiohttp
itself manages on the same machine in the same minute.
"""

import sys

import orjson
from aiohttp import web

from service.repositories.status import STATUS_FIELDS
from service.seeding import seed_row

ROW = orjson.dumps(dict(zip(STATUS_FIELDS, seed_row(1), strict=True)))


async def row(request: web.Request) -> web.Response:
    return web.Response(body=ROW, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_get("/row/{id}", row)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
