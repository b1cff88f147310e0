"""Units of work: transactions described as generators, so any backend can run them.

A unit of work is a plain generator. It *yields* :class:`Statement` objects and *receives*
each one's :class:`Result`; its ``return`` value is the result of the whole unit::

    def rename(project_id: str, name: str) -> Work[int]:
        return (yield from execute("UPDATE projects SET name = ? WHERE id = ?", (name, project_id)))

Why a generator and not an async function taking a connection: the SQLite writer drives it on
its own thread from BEGIN to COMMIT in *one* hop (no round trip to the event loop per
statement, as datasette's ``execute_write_fn``), while an asyncpg backend can drive the very
same generator by awaiting each statement. Repositories compose units with ``yield from`` and
never learn which backend runs them. Statements use ``?`` placeholders; the backend rewrites
them when its driver wants another style.

Database errors are thrown *into* the generator at the ``yield`` that caused them, already
translated to the backend-neutral exceptions of :mod:`service.db.errors`, so a unit may catch
:class:`~service.db.errors.UniqueViolation` and carry on.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.db.url import POSTGRESQL, SQLITE

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement. ``many``: run once per parameter tuple of ``params`` (an iterable,
    consumed lazily, so a large batch is never held in memory whole)."""

    sql: str
    params: Sequence[Any] | Iterable[Sequence[Any]] = ()
    many: bool = False
    only: str | None = None  # run only on this backend ("postgresql"); others skip it
    # The unit does not read this statement's result: a backend may hold it back and send it
    # with the next statement or the COMMIT, in order (see :func:`execute_later`).
    later: bool = False


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell listeners of ``channel`` that something changed, once the transaction commits.

    Delivered only if the COMMIT that contains it succeeds (and never for a unit that rolled
    back): on SQLite to this process and to other processes through a signal file; on
    PostgreSQL this maps onto NOTIFY, which is transactional in the same way.
    """

    channel: str


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[Row] = field(default_factory=list)
    rowcount: int = -1


Step = Statement | Notify
Work = Generator[Step, Result, T]


def query(sql: str, params: Sequence[Any] = ()) -> Work[list[Row]]:
    """Rows of a SELECT (or of DML with RETURNING)."""
    result = yield Statement(sql, params)
    return result.rows


def query_one(sql: str, params: Sequence[Any] = ()) -> Work[Row | None]:
    rows = yield from query(sql, params)
    return rows[0] if rows else None


def execute(sql: str, params: Sequence[Any] = ()) -> Work[int]:
    """Run DML; returns the number of rows it changed."""
    result = yield Statement(sql, params)
    return result.rowcount


def execute_later(sql: str, params: Sequence[Any] = ()) -> Work[None]:
    """Run DML whose outcome the unit does not look at (an audit row, say).

    Why: on PostgreSQL every statement is a round trip, and asyncpg cannot pipeline. A
    statement nobody waits for can travel with the next one the unit sends, or with its
    COMMIT: a POST is then three round trips instead of four. Statements still run in the
    order the unit yields them, in the same transaction; an error in a held-back statement
    fails the unit at that later point (the unit cannot catch it at this ``yield``).
    """
    yield Statement(sql, params, later=True)


def execute_many(sql: str, params: Iterable[Sequence[Any]]) -> Work[int]:
    result = yield Statement(sql, params, many=True)
    return result.rowcount


def notify(channel: str) -> Work[None]:
    yield Notify(channel)


_savepoint_ids = itertools.count(1)


def savepoint(work: Work[T]) -> Work[T]:
    """Run ``work`` so that, if it raises, only its own changes are undone.

    This is how writes nest: a helper that writes can be ``yield from``-ed inside another
    write, and its failure does not doom the outer transaction (the caller may catch it).
    """
    name = f"bobgen_sp_{next(_savepoint_ids)}"
    yield Statement(f"SAVEPOINT {name}")
    try:
        result = yield from work
    except GeneratorExit:
        raise  # the whole transaction is being abandoned: nothing more may be yielded
    except BaseException:
        yield Statement(f"ROLLBACK TO {name}")
        yield Statement(f"RELEASE {name}")
        raise
    yield Statement(f"RELEASE {name}")
    return result


# ---- driving a unit (for backends) -------------------------------------------------------------


class ReadOnlyViolation(RuntimeError):
    """A unit run as a read tried to notify or to executemany: use ``Database.write``."""


def _advance(work: Work[T], send: Result | None, throw: Exception | None) -> Step:
    """The unit's next step: after an error (thrown in), a result, or at the start."""
    if throw is not None:
        return work.throw(throw)
    return next(work) if send is None else work.send(send)


def drive(work: Work[T], run: Callable[[Step], Result]) -> T:
    """Run ``work`` to its end, ``run`` doing each step (a backend's statement runner).

    Whatever ``run`` raises (an ``Exception``: backends raise the neutral errors) is thrown
    into the unit at the ``yield`` that caused it, so the unit may catch it and go on; what
    the unit does not catch comes out of here. ``BaseException``s (cancellation) propagate.
    """
    send: Result | None = None
    throw: Exception | None = None
    while True:
        try:
            step = _advance(work, send, throw)
        except StopIteration as stop:
            result: T = stop.value
            return result
        send, throw = None, None
        try:
            send = run(step)
        except Exception as exc:
            throw = exc


async def drive_async(work: Work[T], run: Callable[[Step], Awaitable[Result]]) -> T:
    """:func:`drive` for a backend whose statements are awaited (asyncpg, aiosqlite)."""
    send: Result | None = None
    throw: Exception | None = None
    while True:
        try:
            step = _advance(work, send, throw)
        except StopIteration as stop:
            result: T = stop.value
            return result
        send, throw = None, None
        try:
            send = await run(step)
        except Exception as exc:
            throw = exc


def read_only(step: Step) -> Statement:
    """``step`` as a statement a read may run, or :class:`ReadOnlyViolation`."""
    if isinstance(step, Notify) or step.many:
        raise ReadOnlyViolation("a read cannot notify or executemany: use Database.write")
    return step


# ---- the few statements that differ between backends -----------------------------------------
# Written here once, so that repositories stay portable. SQLite needs none of them: it has one
# writer at a time and assigns INTEGER PRIMARY KEYs from the table's own maximum.


def lock_for_inserts(table: str) -> Work[None]:
    """Make concurrent writers of ``table`` wait until this transaction ends.

    For a unit that derives keys from what it reads (the seed: "the next ids after max(id)"):
    on PostgreSQL two such units could otherwise read the same maximum. Reads are not blocked.
    """
    yield Statement(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE", only=POSTGRESQL)


def query_for_update(
    sql: str, params: Sequence[Any] = (), *, skip_locked: bool = False
) -> Work[list[Row]]:
    """Rows of a SELECT that this transaction is about to change.

    On PostgreSQL they are locked (``FOR UPDATE``) until the transaction ends, so two
    transactions cannot both act on what they read; with ``skip_locked`` a row another
    transaction holds is passed over instead of waited for (how concurrent reservers each get a
    different free row). On SQLite the writer lock already makes the transaction the only one.
    """
    clause = " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"
    locked = yield Statement(sql + clause, params, only=POSTGRESQL)
    plain = yield Statement(sql, params, only=SQLITE)
    return locked.rows or plain.rows


def sync_identity(table: str, column: str = "id") -> Work[None]:
    """After inserting explicit values into an identity column, move its sequence past them,
    so that the next row whose id the database assigns does not collide (PostgreSQL only)."""
    yield Statement(
        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
        f"coalesce(max({column}), 0) + 1, false) FROM {table}",
        only=POSTGRESQL,
    )


def returning(value: T) -> Work[T]:
    """A unit that runs no statement: handy where a unit is expected but nothing is to do."""
    return value
    yield  # pragma: no cover - makes this a generator
