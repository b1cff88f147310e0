"""An async Python client for BobGen's REST API (docs/client.md).

from service.client import BobGen, NotFound

async with BobGen("http://127.0.0.1:8080", token) as bobgen:
    record = await bobgen.status.create(uptime=99.9, version="1.2.0", latency=12, error_rate=0)
    async for idea in bobgen.projects("p1").ideas.list(status="open"):
        ...
"""

from service.client.api import BobGen
from service.client.errors import (
    BobGenError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PreconditionRequired,
    ServerError,
    Unauthorized,
    Unavailable,
)
from service.client.sync import BobGenSync
from service.client.transport import Retries, Row

__all__ = [
    "BobGen",
    "BobGenError",
    "BobGenSync",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "PreconditionRequired",
    "Retries",
    "Row",
    "ServerError",
    "Unauthorized",
    "Unavailable",
]
