"""Status machines (run steps, workflow nodes): a table of moves and one check."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

S = TypeVar("S", bound=StrEnum)


class InvalidTransition(ValueError):
    """The status cannot move from ``current`` to ``requested``; ``allowed`` lists the moves."""

    def __init__(self, current: StrEnum, requested: StrEnum, allowed: Iterable[StrEnum]):
        super().__init__(f"{current} cannot become {requested}")
        self.current, self.requested = current, requested
        self.allowed = sorted(allowed)


def final_states(moves: Mapping[S, frozenset[S]]) -> frozenset[S]:
    return frozenset(state for state, nexts in moves.items() if not nexts)


def check_transition(moves: Mapping[S, frozenset[S]], current: S, requested: S) -> None:
    """Allow the moves in the table, and staying put (to update details) until final."""
    if requested == current and moves[current]:
        return
    if requested not in moves[current]:
        raise InvalidTransition(current, requested, moves[current])
