"""The test tokens: known secrets planted (as hashes, as in production) into each test
database before an app starts on it, so no initial admin token is generated."""

from __future__ import annotations

from pathlib import Path

from service.config import DEFAULT_MIGRATIONS_DIR
from service.db import DatabaseURL
from service.db.migrations import apply_migrations
from tests.backends import plant_tokens

ADMIN_TOKEN = "bgt_test-admin"
WRITER_TOKEN = "bgt_test-writer"
READER_TOKEN = "bgt_test-reader"
TEST_TOKENS = {
    ADMIN_TOKEN: ("ops", "read,write,admin"),
    WRITER_TOKEN: ("ci-bot", "read,write"),
    READER_TOKEN: ("dashboard", "read"),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def plant_test_tokens(target: DatabaseURL | Path) -> DatabaseURL:
    """Migrate ``target`` and store the known test tokens in it."""
    url = DatabaseURL.parse(target)
    apply_migrations(url, DEFAULT_MIGRATIONS_DIR)
    plant_tokens(url, TEST_TOKENS)
    return url
