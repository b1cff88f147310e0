"""Audited writes: the audit row goes into the same transaction as the write it describes.

So a write that fails (or is rolled back) leaves no audit row, and an audit row always
describes a write that happened. A handler writes::

    def work(w: AuditedWrite) -> Work[dict]:
        row = yield from repo.insert(values, w.now)
        w.audit("thing.created", scope="things", message=f"thing {row['id']} created")
        return row

    row = await audited_write(db, actor, work)

and the whole of ``work`` plus its audit rows runs in one hop on the writer thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.db import Database, Work
from service.db.database import operation_name
from service.repositories import audit as audit_repo
from service.repositories.audit import AuditEntry
from service.timeutil import utc_now

T = TypeVar("T")
SYSTEM_ACTOR = "system"


class UnauditedWrite(RuntimeError):
    """A write transaction ended without saying what it did: a programming error."""


@dataclass(slots=True)
class AuditedWrite:
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


Body = Callable[[AuditedWrite], Work[T]]


def audited(actor: str, body: Body[T]) -> Work[T]:
    """A unit of work that runs ``body`` and then writes the audit rows it recorded.

    Refuses (raises :class:`UnauditedWrite`, rolling the unit back) when ``body`` recorded
    nothing. ``yield from audited(...)`` nests inside another write.
    """
    w = AuditedWrite(utc_now())
    result = yield from body(w)
    if not w.entries:
        raise UnauditedWrite("every write must record an audit entry")
    yield from audit_repo.insert_many(w.entries, actor=actor, ts=w.now)
    return result


async def audited_write(db: Database, actor: str, body: Body[T]) -> T:
    """Run ``body`` and its audit rows as one unit of work.

    Handed over as a factory so that a backend may run it again after a serialization
    failure (PostgreSQL): ``body`` must not depend on state a first attempt changed.
    """
    return await db.write(lambda: audited(actor, body), operation=operation_name(body))
