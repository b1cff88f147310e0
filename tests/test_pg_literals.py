"""Which values service.db.pg_literals writes into SQL text, and which it leaves bound.

That they arrive exactly is tested against real databases in tests/test_database.py
(``test_statements_sent_later_store_exactly_what_was_given``)."""

from __future__ import annotations

import pytest

from service.db.pg_literals import HeldBack, inline, literal


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        (None, "NULL"),
        (True, "TRUE"),
        (False, "FALSE"),
        (0, "0"),
        (-(2**63), str(-(2**63))),
        ("", "''"),
        ("it's", "'it''s'"),
        ("a\\'b", "'a\\''b'"),  # standard_conforming_strings: the backslash is plain text
    ],
)
def test_values_with_an_exact_literal(value: object, spelled: str) -> None:
    assert literal(value) == spelled


@pytest.mark.parametrize("value", [2**63, 1.5, b"bytes", "nul\x00", "lone \udc80", [1], {}])
def test_values_without_one_stay_bound(value: object) -> None:
    assert literal(value) is None


def test_placeholders_are_replaced_by_number_not_by_position() -> None:
    params = list(range(1, 11))
    assert inline("SELECT $10, $1, $2", params) is None  # $3..$9 unused: not this statement
    assert inline("INSERT INTO t (a, b) VALUES ($2, $1)", ["x", "y"]) == (
        "INSERT INTO t (a, b) VALUES ('y', 'x')"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t (a) VALUES ($1) -- 'note'",
        'INSERT INTO "t" (a) VALUES ($1)',
        "SELECT $$ $1 $$",
        "INSERT INTO t (a) VALUES ($1); DELETE FROM t",
        "INSERT INTO t (a, b) VALUES ($1, $2)",  # one value for two placeholders
    ],
)
def test_statements_that_are_not_plain_stay_bound(sql: str) -> None:
    assert inline(sql, ["x"]) is None


def test_held_statements_leave_in_order_and_once() -> None:
    held = HeldBack()
    assert not held
    held.hold("INSERT 1")
    held.hold("INSERT 2")
    assert held.take(then="COMMIT") == "INSERT 1;\nINSERT 2;\nCOMMIT"
    assert not held and held.take(then="COMMIT") == "COMMIT"
