"""Documents synced from persona and prompt files: one package for the three things that touch
the files (what the pure parsing in ``service/domain/documents.py`` is fed).

- ``sync``: a full or partial reconcile of the ``documents`` table with the files;
- ``watcher``: the live sync (initial reconcile, then file changes as they come);
- ``files``: the same reads straight from the files, for when the database is unavailable.

Paths have one form in here: roots are resolved (absolute, symlinks followed) once, by
:func:`resolve_roots`, before anything compares a path with them. Watchfiles reports absolute
paths, so a root kept as given (``seeds/documents``) matched nothing and live sync silently
stopped after the initial reconcile.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def resolve_roots(roots: Iterable[Path | str]) -> tuple[Path, ...]:
    """The roots as absolute, resolved paths (relative ones against the working directory)."""
    return tuple(Path(root).resolve() for root in roots)
