"""Log lines cannot be forged and hold no secret, in both formats and for every logger
(aiohttp's own included): docs/security.md "What is logged"."""

from __future__ import annotations

import io
import json
import logging

import pytest

from service import logs

SECRETS = (
    "bgt_0123456789abcdefABCDEF-_x",
    "Bearer not-a-bgt-token",
    "postgresql://bob:hunter2@db.internal:5432/bobgen",
)


@pytest.fixture(params=logs.FORMATS)
def captured(request: pytest.FixtureRequest) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if request.param == "json" else logs.TextFormatter())
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    yield stream
    root.handlers[:] = saved


def test_a_path_with_a_newline_cannot_start_a_line(captured: io.StringIO) -> None:
    path = "/personas/x\n2026-11-29 15:00:00,000 INFO service.tokens: token 7 revoked by cli:root"
    logging.getLogger("service.api.auth").warning("rejected a bearer token on GET %s", path)
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1
    assert not lines[0].startswith("2026-11-29 15:00:00")
    assert "token 7 revoked" in lines[0]  # kept, visibly escaped, on the one line


def test_no_secret_reaches_any_logger_or_traceback(captured: io.StringIO) -> None:
    for secret in SECRETS:
        logging.getLogger("aiohttp.server").warning("header: Authorization: %s\x00", secret)
        try:
            raise ValueError(f"could not use {secret}")
        except ValueError:
            logging.getLogger("service").exception("failed")
    text = captured.getvalue()
    assert "bgt_0123456789" not in text
    assert "not-a-bgt-token" not in text
    assert "hunter2" not in text
    assert "bgt_***" in text and "Bearer ***" in text and "bob:***@db.internal" in text
    if text.startswith("{"):
        assert all(json.loads(line) for line in text.splitlines())
