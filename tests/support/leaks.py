"""The suite's own check that no secret reaches a log: every log the tests wrote (each
process's log records, through BobGen's text format, and every server process's log file) is
searched for the tokens and passwords the tests use (docs/security.md, "What is logged")."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from service.logs import TextFormatter
from tests.support.auth import TEST_TOKENS

SUITE_LOG = "suite-records.log"
# The test tokens, any token the server generated (43 URL-safe characters), and the passwords
# the tests plant in URLs, commands and files.
LEAK = re.compile(
    "|".join(
        [
            *(re.escape(token) for token in TEST_TOKENS),
            r"bgt_[A-Za-z0-9_-]{40,}",
            r"hunter2",
            r"url-secret[0-9]+",
        ]
    )
)


def record_logs(folder: Path) -> logging.Handler:
    """Write every log record of this process to ``folder``/SUITE_LOG in BobGen's text format
    (records the loggers let through; levels are left as the tests set them)."""
    handler = logging.FileHandler(folder / SUITE_LOG, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(TextFormatter())
    logging.getLogger().addHandler(handler)
    return handler


def leaks(folder: Path) -> list[str]:
    """``file: line`` for every log line under ``folder`` that holds a secret."""
    found = []
    for path in sorted(folder.rglob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if LEAK.search(line):
                found.append(f"{path}: {line[:300]}")
    return found
