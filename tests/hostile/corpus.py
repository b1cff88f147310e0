"""The hostile corpus: values an attacker (or a broken client) sends where the API expects
ids, cursors, times, numbers, JSON bodies and credentials. Each must get a JSON 4xx (or, where
the value is merely unusual, an ordinary answer), never a 5xx, a traceback or a forged log
line. Found by hand (issue 16) and by reading the validators; add what you find."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson


def cursor(after: Any) -> str:
    """A cursor as the server makes them, around a position the server never made."""
    raw = json.dumps({"after": after}).encode()  # json: integers beyond 64 bits too
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


BIG = [2**31, 2**63, 2**64, -(2**63) - 1, 10**30]
POSITIONS: list[Any] = [
    -1,
    *BIG,
    1.5,
    "x",
    None,
    True,
    [],
    {},
    [1, 2],
    [None, None],
    [2**63, "x1"],
    ["x", 2**63],
    ["x", 1],
    [1, "x1"],
    ["\u0000", "x1"],
    ["x", "\u0000"],
    ["2026-01-01T00:00:00.000Z", "x" * 5000],
    ["x", "y", "z"],
    [{"a": 1}, "x1"],
    [["x"], "x1"],
]
CURSORS = [
    *[cursor(p) for p in POSITIONS],
    "garbage",
    "%00",
    "eyJhZnRlciI6",  # truncated
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    base64.urlsafe_b64encode(b"[" * 5000).decode(),
]
TIMES = [
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "0000-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-01-01T00:00:00",  # no zone
    "2026-01-01T25:00:00Z",
    "1e9",
    "2026-01-01T00:00:00+99:00",
]
NUMBERS = [str(n) for n in BIG] + [
    "-1",
    "1.5",
    "1e3",
    "\u0661",
    "\uff11",
    "0x10",
    " 1",
    "1 ",
    "+1",
    "NaN",
]
# Query values as sent (percent-encoded): NULs, a forged log line, bidi, invalid UTF-8.
QUERY_TEXTS = ["%00", "a%00b", "x" * 10_000, "a%0AINFO%20forged", "%E2%80%AE", "%ED%A0%80", "%FF"]
# Path segments (percent-encoded as sent): digits that are not ASCII, numbers beyond every
# column, NULs, control characters, traversal.
SEGMENTS = [
    "%D9%A1",  # U+0661 ARABIC-INDIC DIGIT ONE
    "%EF%BC%91",  # U+FF11 FULLWIDTH DIGIT ONE
    "2147483648",
    "9223372036854775808",
    "99999999999999999999999",
    "-1",
    "0",
    "%00",
    "a%00b",
    "x%0a2026-11-29%2015:00:00,000%20INFO%20service.tokens:%20token%207%20revoked",
    "..%2f..%2fetc%2fpasswd",
    "%ff%fe",
    "x" * 300,
    "totals",
    "reserve",
]


def deep(levels: int, *, array: bool = False) -> bytes:
    if array:
        return b"[" * levels + b"]" * levels
    return b'{"a":' * levels + b"1" + b"}" * levels


BODIES: list[bytes] = [
    deep(64),
    deep(300),
    deep(1000),
    deep(5000),
    deep(300, array=True),
    b"\xff\xfe{}",
    b'{"a": "\\ud800"}',
    b'{"a": 1e999}',
    b'{"a": 123456789012345678901234567890}',
    b"[]",
    b"null",
    b'"x"',
    b"{",
    b'{"a": NaN}',
    b"",
]
# Values put into every field of a valid body, one field at a time.
FIELD_VALUES: list[Any] = [
    *BIG,
    -1,
    1e308,
    "\u0000",
    "x\u0000y",
    "x" * 20_000,
    "a\nINFO forged",
    None,
    True,
    [],
    {},
    orjson.loads(deep(40)),
    orjson.loads(deep(300)),
    orjson.loads(deep(900, array=True)),
    ["\u0000"],
    {"\u0000": 1},
    {"k": "\u0000"},
    "\u0661",
]
AUTHORIZATIONS: list[bytes] = [
    b"Bearer bgt_\xff\xfe",
    b"Bearer bgt_\xc3\xa9t\xc3\xa9",
    "Bearer bgt_é".encode(),
    b"Bearer " + b"A" * 8000,
    b"Bearer",
    b"Basic YWRtaW46YWRtaW4=",
    b"bearer  bgt_x",
]
