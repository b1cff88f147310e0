"""Start-up bookkeeping shared by the server and the CLI: meta row and migration runs."""

from __future__ import annotations

from service import __version__
from service.audit import AuditedWrite, audited_write
from service.db import Database, Work, execute
from service.domain.runs import RunContext, StepStatus, new_run_id
from service.repositories import runs as runs_repo
from service.timeutil import utc_now


async def update_meta(db: Database) -> None:
    """Record the running app version, and when the database was first started."""
    if not await db.table_exists("meta"):
        return
    await db.write(
        execute(
            "UPDATE meta SET app_version = ?, created_at = coalesce(created_at, ?) WHERE id = 1",
            (__version__, utc_now()),
        )
    )


async def record_migration_run(
    db: Database, ids: list[str], *, direction: str, actor: str, context: RunContext
) -> str | None:
    """Record applied (or rolled back) migrations as a run with one step each.

    Returns the run id, or None when nothing changed or the runs table does not exist (yet, or
    any more after a rollback).
    """
    if not ids or not await db.table_exists("runs"):
        return None

    def work(w: AuditedWrite) -> Work[str]:
        run = yield from runs_repo.insert_run(
            run_id=new_run_id(),
            now=w.now,
            args={"command": f"migrate.{direction}", "migrations": ids},
            git_sha=context.git_sha,
            config_hash=context.config_hash,
        )
        for migration_id in ids:
            yield from runs_repo.insert_step(
                run_id=run["run_id"],
                name=migration_id,
                status=StepStatus.SUCCEEDED,
                stats={"direction": direction},
                now=w.now,
                finished=True,
            )
        w.audit(
            f"db.{direction}",
            scope="db",
            run_id=run["run_id"],
            message=f"{direction}: {', '.join(ids)}",
            data={"migrations": ids},
        )
        return str(run["run_id"])

    return await audited_write(db, actor, work)


async def after_migrations(
    db: Database, ids: list[str], *, direction: str, actor: str, context: RunContext
) -> None:
    """What follows every migration or rollback, from the server or the CLI."""
    await record_migration_run(db, ids, direction=direction, actor=actor, context=context)
    await update_meta(db)
