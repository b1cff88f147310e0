"""The framework ceiling: a bare aiohttp app answering a canned row, no database, no middleware.

The benchmark runs it beside BobGen so every figure can be read as a ratio of what aiohttp
itself manages on the same machine in the same minute.
"""

import os
import socket
import sys

import orjson
from aiohttp import web

from service.jobs.seeding import seed_row
from service.repositories.status import STATUS_FIELDS

ROW = orjson.dumps(dict(zip(STATUS_FIELDS, seed_row(1), strict=True)))


async def row(request: web.Request) -> web.Response:
    return web.Response(body=ROW, content_type="application/json")


async def created(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ROW, status=201, content_type="application/json")


def main() -> None:
    """``baseline_app.py PORT [PROCESSES]``: with PROCESSES > 1, that many forked processes
    on one port (SO_REUSEPORT), as ``bobgen serve --workers`` runs, for its ceiling. Any GET
    path answers the row, any POST or PATCH 201, so BobGen's scripts run against it as is."""
    port = int(sys.argv[1])
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    app = web.Application()
    app.router.add_get("/{tail:.*}", row)
    app.router.add_post("/{tail:.*}", created)
    app.router.add_patch("/{tail:.*}", created)
    if processes == 1:
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
        return
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    web.run_app(app, sock=sock, access_log=None, print=None)


if __name__ == "__main__":
    main()
