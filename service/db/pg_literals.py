"""Held-back statements, sent to PostgreSQL as SQL text together with the next one or the COMMIT.

Why: asyncpg sends one statement per round trip and has no pipelining (MagicStack/asyncpg#839),
and on a busy host each round trip costs the event loop a wake-up and the driver its per-call
work. PostgreSQL's *simple* query protocol carries several statements in one message, but no
bound parameters. So a statement whose result the unit does not read (an audit row, a
``pg_notify``; see :func:`service.db.work.execute_later`) is written out here with its values
as literals and sent with what follows it: ``INSERT ... ; COMMIT`` is one round trip.

Only values whose literal spelling is exact are written out: ``None``, booleans, integers in
PostgreSQL's ``bigint`` range and text without NUL (which PostgreSQL text cannot hold), quoted
with doubled single quotes. That quoting is complete only while ``standard_conforming_strings``
is on (a backslash is then an ordinary character); the caller checks the session's setting.
A statement with any other value, or whose text holds quotes of its own, is not held back: it
is bound and sent on its own as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_PLACEHOLDER = re.compile(r"\$(\d+)")
_BIGINT = range(-(2**63), 2**63)


def literal(value: Any) -> str | None:
    """``value`` as a PostgreSQL literal, or None when it has no exact one here."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value) if value in _BIGINT else None
    if isinstance(value, str):
        if "\x00" in value or not (value.isascii() or _encodable(value)):
            return None
        return "'" + value.replace("'", "''") + "'"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: the bound path reports it where it occurs
        return False
    return True


def inline(sql: str, params: Sequence[Any]) -> str | None:
    """``sql`` (with ``$n`` placeholders) with its parameters written in, or None.

    The text must come from code, not input, and hold no quotes or dollar-quoting of its own:
    then every ``$n`` in it is a placeholder and nothing else.
    """
    if "'" in sql or '"' in sql or "$$" in sql or ";" in sql:
        return None
    values = [literal(v) for v in params]
    if any(v is None for v in values):
        return None
    numbers = {int(n) for n in _PLACEHOLDER.findall(sql)}
    if numbers != set(range(1, len(values) + 1)):
        return None
    return _PLACEHOLDER.sub(lambda m: str(values[int(m.group(1)) - 1]), sql)


class HeldBack:
    """The statements a unit has let wait, in order; sent before the next statement it waits
    for, or with the COMMIT."""

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: list[str] = []

    def hold(self, text: str) -> None:
        self._texts.append(text)

    def __bool__(self) -> bool:
        return bool(self._texts)

    def take(self, then: str | None = None) -> str:
        """The held statements (and ``then``) as one script; nothing is held afterwards."""
        texts, self._texts = self._texts, []
        if then is not None:
            texts.append(then)
        return ";\n".join(texts)
