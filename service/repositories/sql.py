"""Small SQL helpers shared by the repositories."""

from __future__ import annotations

from typing import Any


class Where:
    """Conditions joined with AND, each with its parameters, in order.

    Column names must come from code, never from input: only values are parameters.
    """

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, *params: Any) -> Where:
        self.conditions.append(condition)
        self.params.extend(params)
        return self

    def equal(self, column: str, value: Any) -> Where:
        """``column = value``, skipped when value is None (an absent filter)."""
        return self if value is None else self.add(f"{column} = ?", value)

    def sql(self) -> str:
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
