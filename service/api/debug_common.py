"""Helpers the debug-metadata handlers share (worktrees.py and sessions.py import them
downward): their audit rows and inserts with an id."""

from __future__ import annotations

from typing import Any

from service.api.common import new_id
from service.audit import AuditedWrite
from service.db import UniqueViolation, Work
from service.domain.debug import Refused
from service.repositories import versioned
from service.repositories.versioned import Table


def audit(w: AuditedWrite, event: str, message: str, **data: Any) -> None:
    w.audit(event, scope="debug", message=message, data=data)


def insert_row(
    w: AuditedWrite, table: Table, kind: str, values: dict[str, Any]
) -> Work[dict[str, Any]]:
    """Insert with a new id (unless given): a taken id or unique name is 409."""
    values = {**values, "id": values.get("id") or new_id()}
    try:
        row = yield from versioned.insert(table, values)
    except UniqueViolation:
        raise Refused(
            "already_exists", f"a {kind} with this id or name exists already", {"id": values["id"]}
        ) from None
    assert row is not None
    audit(w, f"{kind}.created", f"{kind} {row['id']} created", id=row["id"])
    return row
