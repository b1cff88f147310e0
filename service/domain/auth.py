"""API tokens: generated here, shown once, stored only as SHA-256 hashes.

A token is 256 bits from :mod:`secrets`, so a plain SHA-256 (no salt, no slow KDF) is enough:
nobody can brute-force the preimage, and the hash can be looked up through a unique index.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

TOKEN_PREFIX = "bgt_"


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


class InvalidScopes(ValueError):
    """A scope list named something other than read, write and admin."""


def generate_token() -> str:
    """A new random token. The prefix makes leaked tokens easy to grep for in logs and repos."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hashes_match(a: str, b: str) -> bool:
    """Constant-time comparison, so response timing says nothing about how much matched."""
    return hmac.compare_digest(a.encode(), b.encode())


def parse_scopes(text: str) -> frozenset[Scope]:
    """``"read,write"`` -> {READ, WRITE}; unknown names raise :class:`InvalidScopes`."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - {s.value for s in Scope})
    if unknown or not names:
        raise InvalidScopes(
            f"unknown scope(s): {', '.join(unknown)}" if unknown else "name at least one scope"
        )
    return frozenset(Scope(n) for n in names)


def format_scopes(scopes: frozenset[Scope]) -> str:
    return ",".join(sorted(s.value for s in scopes))
