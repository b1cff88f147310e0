"""Documents read straight from the files: the fallback when the database is unavailable.

The same filters as the database reads (type, name, JSON fields, full text as "every word
appears", keyset paging by name and id), computed in memory over a scan of the roots. A scan
is reused for ``FRESH_S`` so that a burst of requests during an outage reads the files once.
Answers carry ``X-BobGen-Source: files`` (the handlers add it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.db.search import words
from service.documents.sync import scan
from service.domain.documents import DEFAULT_MAX_FILE_BYTES, ParsedDocument

FRESH_S = 1.0
SOURCE_HEADER = {"X-BobGen-Source": "files"}


class FileView:
    def __init__(self, roots: Sequence[Path], *, max_bytes: int = DEFAULT_MAX_FILE_BYTES):
        self.roots = list(roots)
        self.max_bytes = max_bytes
        self._documents: list[dict[str, Any]] = []
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def documents(self) -> list[dict[str, Any]]:
        """Every document the files hold now (as rows), ordered by name then id."""
        async with self._lock:
            if time.monotonic() - self._read_at > FRESH_S:
                files = await asyncio.to_thread(scan, self.roots, max_bytes=self.max_bytes)
                rows = [_row(d) for d in files.documents.values()]
                self._documents = sorted(rows, key=lambda r: (r["name"], r["id"]))
                self._read_at = time.monotonic()
            return self._documents


def _row(doc: ParsedDocument) -> dict[str, Any]:
    return {
        "id": doc.id,
        "type": str(doc.type),
        "name": doc.name,
        "document": doc.document,
        "file_path": doc.file_path,
        "file_modified": doc.file_modified,
        "content_hash": doc.content_hash,
        "created_at": doc.file_modified,  # not known without the database
        "updated_at": doc.file_modified,
    }


def _field(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def select(
    rows: list[dict[str, Any]],
    *,
    limit: int,
    kind: str | None = None,
    name: str | None = None,
    fields: dict[str, str] | None = None,
    text: str | None = None,
    after: tuple[str, str] | None = None,
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """What the database reads would answer, from ``rows`` (ordered by name, id). A text
    search matches documents containing every word (case-insensitive), in name order."""
    wanted = [w.lower() for w in words(text)] if text else []
    found = []
    for row in rows:
        if kind is not None and row["type"] != kind:
            continue
        if name is not None and row["name"] != name:
            continue
        if any(_field(row["document"], p) != v for p, v in (fields or {}).items()):
            continue
        if wanted:
            haystack = set(w.lower() for w in words(f"{row['name']} {row['document']}"))
            if not all(w in haystack for w in wanted):
                continue
        if after is not None and (row["name"], row["id"]) <= after:
            continue
        found.append(row)
        if len(found) > limit:
            break
    more = len(found) > limit and not wanted
    page = found[:limit]
    return page, ((page[-1]["name"], page[-1]["id"]) if more else None)
