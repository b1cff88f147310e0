"""What a secret looks like, so that none is stored or written where it should not be.

Used by the logs (every line, both formats) and by the debug metadata (a command's
environment and argv are stored redacted). By value: a BobGen token (``bgt_...``), whatever
follows ``Bearer``, and the password of a URL (``scheme://user:password@host``). By name: an
environment variable whose name says it holds one (docs/security.md lists the patterns).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"

_SECRET_VALUES = re.compile(
    r"(?P<token>bgt_[A-Za-z0-9_\-]+)"
    r"|(?P<bearer>(?i:bearer)\s+)(?P<credential>[^\s'\"\\,]+)"
    r"|(?P<userinfo>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@'\"]*:)(?P<password>[^@\s/'\"]+)(?=@)"
)
# Names of variables that hold secrets: *PASS* (PASSWORD, DB_PASS, PASSPHRASE), *PWD*, *SECRET*,
# *TOKEN*, *KEY*, *COOKIE*, *AUTH* (AUTHORIZATION, OAUTH), *CREDENTIAL*, *PRIVATE*, *SIGNATURE*,
# *SESSION*, a *_PAT or PAT suffix (GH_PAT), *DSN*, and *DATABASE_URL* (it carries a password).
SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|KEY|COOKIE|AUTH|CREDENTIAL|PRIVATE|SIGNATURE|SESSION|DSN"
    r"|DATABASE_URL|(^|_)PAT$",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every token, bearer value and URL password replaced by ``***``."""

    def mask(match: re.Match[str]) -> str:
        if match.group("token"):
            return "bgt_" + MASK
        if match.group("bearer"):
            return match.group("bearer") + MASK
        return match.group("userinfo") + MASK

    return _SECRET_VALUES.sub(mask, text)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """An environment as it may be stored: values of secret-named variables replaced whole,
    and secrets inside any other value masked."""
    return {k: (MASK if SECRET_NAME.search(k) else redact(v)) for k, v in env.items()}


def redact_all(values: Iterable[str]) -> list[str]:
    """Each of ``values`` (an argv) with the secrets inside it masked."""
    return [redact(v) for v in values]
