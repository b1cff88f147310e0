"""Audited writes: the audit row goes into the same transaction as the write it describes.

So a write that fails (or is rolled back) leaves no audit row, and an audit row always
describes a write that happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from service.db import Database
from service.repositories import audit as audit_repo
from service.repositories.audit import AuditEntry
from service.timeutil import utc_now

SYSTEM_ACTOR = "system"


class UnauditedWrite(RuntimeError):
    """A write transaction ended without saying what it did: a programming error."""


@dataclass(slots=True)
class AuditedWrite:
    conn: aiosqlite.Connection
    now: str
    entries: list[AuditEntry] = field(default_factory=list)

    def audit(
        self,
        event: str,
        *,
        scope: str,
        message: str,
        data: dict[str, Any] | None = None,
        run_id: str | None = None,
        level: str = "info",
    ) -> None:
        """Describe what this transaction did. Never put secrets in ``data``."""
        self.entries.append(AuditEntry(event, scope, message, data or {}, run_id, level))


@asynccontextmanager
async def audited_transaction(db: Database, actor: str) -> AsyncIterator[AuditedWrite]:
    """``db.transaction()`` that refuses to commit unless the body called ``audit()``."""
    async with db.transaction() as conn:
        write = AuditedWrite(conn, utc_now())
        yield write
        if not write.entries:
            raise UnauditedWrite("every write must record an audit entry")
        for entry in write.entries:
            await audit_repo.insert(conn, entry, actor=actor, ts=write.now)
