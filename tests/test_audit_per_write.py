"""One write, one audit row (docs/security.md), over every write route of the router.

The route walk (tests/support/walk.py) calls each route once with a valid request; this test
counts the audit rows each call adds: exactly one per successful write, none per read. The walk
must cover every write route the router has, so a new route without a step fails this test
instead of going unchecked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.db import DatabaseURL
from tests.backends import sql
from tests.support import eventually
from tests.support.auth import READER_TOKEN
from tests.support.walk import (
    BACKGROUND_JOBS,
    as_templates,
    first_sync_done,
    spec_operations,
    walk_every_route,
    write_documents,
)

ANY = {"If-Match": "*"}


async def test_every_write_route_adds_exactly_one_audit_row(
    make_client: Any, db_url: DatabaseURL, tmp_path: Path
) -> None:
    client: TestClient = await make_client(documents_dirs=str(write_documents(tmp_path / "d")))
    await eventually(first_sync_done(client), what="the first documents sync")
    covered: set[tuple[str, str]] = set()

    def audit_rows() -> int:
        return int(sql(db_url, "SELECT count(*) FROM audit_log")[0][0])

    async def call(
        method: str, template: str, body: Any = None, *, status: int, **params: str
    ) -> dict[str, Any]:
        before = audit_rows()
        path = template.format(**params)
        resp = await client.request(method, path, json=body, headers=ANY)
        data = await resp.json() if resp.status != 204 else {}
        assert resp.status == status, (method, path, resp.status, data)
        covered.add((method, template))
        if (method, template) not in BACKGROUND_JOBS:
            expected = 1 if method != "GET" else 0
            assert audit_rows() - before == expected, (method, template)
        return data

    # A refused write adds none.
    before = audit_rows()
    refused = await client.post("/bobgen/status", json={"uptime": "x"})
    assert refused.status == 400
    forbidden = await client.post(
        "/runs", json={}, headers={"Authorization": f"Bearer {READER_TOKEN}"}
    )
    assert forbidden.status == 403
    assert audit_rows() == before

    await walk_every_route(call)

    operations = await spec_operations(client)
    writes = {(m, p) for m, p in operations if m != "GET"}
    assert writes <= as_templates(covered, operations)

    # Every read the walk made is named after the function that made it (bobgen_db_read_seconds).
    text = await (await client.get("/metrics")).text()
    reads = set(re.findall(r'bobgen_db_read_seconds_count\{operation="([^"]+)"\}', text))
    assert len(reads) >= 10, reads
    unnamed = {op for op in reads if not re.fullmatch(r"[a-z_]+\.[a-z_][\w.]*", op)}
    assert unnamed == set(), unnamed
