"""Keeping the ``documents`` table in step with persona and prompt files.

A full reconcile reads every file under the roots, compares it with what is stored (by
content hash) and writes only the difference: new files are added, changed ones updated,
vanished ones deleted, unchanged ones not touched. A file that does not parse is a sync
error: it is reported, and its last good version stays in the table. The files are the source
of truth: when file and row differ, the file wins (docs/documents.md).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Any

from service.audit import AuditedWrite, audited_write
from service.db import Database, IntegrityViolation, ValueOutOfRange, Work
from service.domain.documents import (
    DEFAULT_MAX_FILE_BYTES,
    LAYOUT,
    DocumentError,
    ParsedDocument,
    document_type,
    parse,
    relative_to_root,
)
from service.repositories import documents as documents_repo
from service.repositories.documents import StoredState

WRITE_BATCH = 500  # documents per transaction


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncError:
    file: str  # relative to its root
    root: str
    reason: str


@dataclass(slots=True)
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    errors: list[SyncError] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    def record(self, todo: Plan, errors: list[SyncError]) -> None:
        self.added += [d.file_path for d in todo.added]
        self.updated += [d.file_path for d in todo.updated]
        self.deleted += list(todo.deleted)
        self.unchanged += todo.unchanged
        self.errors += errors

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "deleted": len(self.deleted),
            "unchanged": self.unchanged,
            "errors": len(self.errors),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts()
        return data


@dataclass(slots=True)
class Scan:
    """What the files say: parsed documents by relative path, and the files that failed."""

    documents: dict[str, ParsedDocument] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    errors: list[SyncError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DocumentFile:
    """A document file found under a root: ``key`` is its path relative to that root."""

    root: Path
    path: Path
    key: str


def find_files(
    roots: Sequence[Path], *, only: set[str] | None = None
) -> tuple[list[DocumentFile], list[SyncError]]:
    """The document files under ``roots`` (blocking): all of them, or those at the relative
    paths ``only`` (what a watcher saw change).

    With several roots, the first root that has a relative path wins; the same path under a
    later root is reported as an error (it would need the same id).
    """
    found: list[DocumentFile] = []
    errors: list[SyncError] = []
    seen: set[str] = set()
    for root in roots:
        if only is None:
            candidates = [
                path
                for folder, _suffix in LAYOUT.values()
                if (root / folder).is_dir()
                for path in sorted((root / folder).iterdir())
            ]
        else:
            candidates = [root / relative for relative in sorted(only)]
        for path in candidates:
            relative = relative_to_root(path, root)
            if relative is None or document_type(relative) is None:
                continue
            key = str(relative)
            if path.is_symlink() or path.parent.is_symlink():
                # Not followed: a link could publish any file the server can read.
                errors.append(SyncError(key, str(root), NOT_FOLLOWED))
                continue
            if not path.is_file():
                continue
            if key in seen:
                reason = "the same path exists under an earlier root, which wins"
                errors.append(SyncError(key, str(root), reason))
                continue
            seen.add(key)
            found.append(DocumentFile(root, path, key))
    return found, errors


NOT_FOLLOWED = "a symbolic link: not followed (documents are regular files inside the root)"


def read_files(files: Sequence[DocumentFile], max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Scan:
    """Read and parse ``files`` (blocking: run it in a thread). Any failure is that file's
    error, named by kind (never quoting its content or an absolute path)."""
    result = Scan()
    for file in files:
        try:
            data, mtime_ns = _read_regular_file(file.path, max_bytes)
            parsed = parse(PurePosixPath(file.key), data, mtime_ns, max_bytes=max_bytes)
        except DocumentError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = NOT_FOLLOWED if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
        except Exception as exc:  # a parser's surprise must not stop the sync of the others
            log.warning("could not parse %s", file.key, exc_info=True)
            reason = f"could not be parsed ({type(exc).__name__})"
        else:
            result.documents[file.key] = parsed
            continue
        result.failed.add(file.key)
        result.errors.append(SyncError(file.key, str(file.root), reason))
    return result


def _read_regular_file(path: Path, max_bytes: int) -> tuple[bytes, int]:
    """The bytes and mtime of ``path``, refusing a symbolic link at the moment of opening (it
    may have been swapped in since the folder was listed) and a file over ``max_bytes``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        stat = os.fstat(handle.fileno())
        if not S_ISREG(stat.st_mode):
            raise DocumentError("not a regular file")
        if stat.st_size > max_bytes:
            raise DocumentError(f"larger than the {max_bytes}-byte limit ({stat.st_size} bytes)")
        return handle.read(max_bytes + 1), stat.st_mtime_ns


def scan(
    roots: Sequence[Path],
    *,
    only: set[str] | None = None,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Scan:
    """:func:`find_files` and :func:`read_files` in one (blocking: run it in a thread)."""
    found, errors = find_files(roots, only=only)
    result = read_files(found, max_bytes)
    result.errors[:0] = errors
    return result


@dataclass(slots=True)
class Plan:
    added: list[ParsedDocument] = field(default_factory=list)
    updated: list[ParsedDocument] = field(default_factory=list)
    deleted: dict[str, str] = field(default_factory=dict)  # file path -> id
    unchanged: int = 0


def plan(files: Scan, stored: dict[str, StoredState]) -> Plan:
    """The writes that make the table say what the files say about the paths in ``stored``
    and in ``files`` (all of them, or those a watcher saw change). Pure."""
    result = Plan()
    for path, doc in files.documents.items():
        state = stored.get(path)
        if state is None:
            result.added.append(doc)
        elif state.content_hash != doc.content_hash or state.id != doc.id:
            result.updated.append(doc)
        else:
            result.unchanged += 1
    for path, state in stored.items():
        # A file that failed to parse keeps its last good row; a vanished one goes.
        if path not in files.documents and path not in files.failed:
            result.deleted[path] = state.id
    return result


async def reconcile(
    db: Database,
    roots: Sequence[Path],
    *,
    actor: str,
    dry_run: bool = False,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> SyncReport:
    """One full sync of the table with the files under ``roots``.

    Files are read and written WRITE_BATCH at a time, the next batch read while this one is
    written, so the disk and the database work at once; what vanished is deleted at the end.
    """
    started = time.perf_counter()
    found, errors = await asyncio.to_thread(find_files, roots)
    stored = await db.read(documents_repo.states())
    report = SyncReport(errors=errors, dry_run=dry_run)
    async with aclosing(_read_ahead(found, max_bytes)) as batches:
        async for files in batches:
            keys = files.documents.keys() | files.failed
            todo = plan(files, {key: stored[key] for key in keys if key in stored})
            report.record(todo, files.errors)
            if not dry_run:
                report.errors += await apply(db, todo, actor=actor)
    listed = {file.key for file in found}
    vanished = Plan(deleted={path: s.id for path, s in stored.items() if path not in listed})
    report.record(vanished, [])
    report.deleted.sort()
    if not dry_run:
        report.errors += await apply(db, vanished, actor=actor)
    report.seconds = round(time.perf_counter() - started, 4)
    return report


async def _read_ahead(files: list[DocumentFile], max_bytes: int) -> AsyncGenerator[Scan, None]:
    """``files`` read WRITE_BATCH at a time in a thread, the next batch while the caller
    writes this one (PostgreSQL works in its own process, SQLite on the writer thread)."""

    def read_later(start: int) -> asyncio.Future[Scan] | None:
        if start >= len(files):
            return None
        batch = files[start : start + WRITE_BATCH]
        return asyncio.ensure_future(asyncio.to_thread(read_files, batch, max_bytes))

    reading = read_later(0)
    try:
        for start in range(WRITE_BATCH, len(files) + WRITE_BATCH, WRITE_BATCH):
            assert reading is not None
            current, reading = reading, read_later(start)
            yield await current
    finally:
        if reading is not None:
            reading.cancel()  # its thread finishes on its own; nothing waits for it


async def apply(db: Database, todo: Plan, *, actor: str) -> list[SyncError]:
    """Write a plan in transactions of at most WRITE_BATCH documents, each audited.

    A document the database refuses (a constraint, a value it cannot hold) must not hold back
    the others, nor stop a watcher that would retry it for ever: its batch is written again
    one document at a time, and each refused one becomes its file's error (returned)."""
    upserts = [*todo.added, *todo.updated]
    deletes = list(todo.deleted.items())
    refused: list[SyncError] = []
    for start in range(0, max(len(upserts), len(deletes)), WRITE_BATCH):
        batch = upserts[start : start + WRITE_BATCH]
        gone = deletes[start : start + WRITE_BATCH]
        try:
            await audited_write(db, actor, partial(_write_batch, batch=batch, gone=gone))
        except (IntegrityViolation, ValueOutOfRange):
            refused += await _one_at_a_time(db, batch, gone, actor=actor)
    return refused


async def _one_at_a_time(
    db: Database, batch: list[ParsedDocument], gone: list[tuple[str, str]], *, actor: str
) -> list[SyncError]:
    if gone:
        await audited_write(db, actor, partial(_write_batch, batch=[], gone=gone))
    refused = []
    for document in batch:
        try:
            await audited_write(db, actor, partial(_write_batch, batch=[document], gone=[]))
        except (IntegrityViolation, ValueOutOfRange) as exc:
            reason = f"the database refused it ({type(exc).__name__})"
            refused.append(SyncError(document.file_path, "", reason))
    return refused


def _write_batch(
    w: AuditedWrite, *, batch: list[ParsedDocument], gone: list[tuple[str, str]]
) -> Work[None]:
    yield from documents_repo.upsert_many(batch, w.now)
    yield from documents_repo.delete_many(doc_id for _, doc_id in gone)
    w.audit(
        "documents.synced",
        scope="documents",
        message=f"{len(batch)} written, {len(gone)} deleted",
        data={"written": [d.file_path for d in batch], "deleted": [p for p, _ in gone]},
    )
