"""``bobgen token create | list | revoke``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from service.cli.common import (
    cli_actor,
    open_database,
)
from service.config import Config


def token_create(config: Config, args: argparse.Namespace) -> int:
    from service.domain.auth import InvalidScopes, parse_scopes
    from service.tokens import create_token

    try:
        scopes = parse_scopes(args.scopes)
    except InvalidScopes as exc:
        print(f"bobgen: error: {exc}", file=sys.stderr)
        return 2
    user = args.user.strip()
    if not user or len(user) > 64:
        print("bobgen: error: --user must be 1 to 64 characters", file=sys.stderr)
        return 2

    async def create() -> tuple[str, Any]:
        async with open_database(config, migrate=True) as db:
            return await create_token(
                db, user=user, name=args.name, scopes=scopes, actor=cli_actor()
            )

    token, record = asyncio.run(create())
    print(token)  # stdout holds only the token, for scripts: TOKEN=$(bobgen token create ...)
    print(
        f"token {record.id} for {record.user} with scopes {','.join(sorted(scopes))}; "
        "it is shown only this once",
        file=sys.stderr,
    )
    return 0


def token_list(config: Config, args: argparse.Namespace) -> int:
    from service.tokens import list_tokens

    async def fetch() -> list[Any]:
        async with open_database(config, migrate=False) as db:
            return await list_tokens(db)

    records = [r.public() for r in asyncio.run(fetch())]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"{'id':>4}  {'user':<16} {'scopes':<18} {'created':<24} {'last used':<24} revoked")
    for r in records:
        print(
            f"{r['id']:>4}  {r['user']:<16} {r['scopes']:<18} {r['created_at']:<24} "
            f"{r['last_used_at'] or '-':<24} {r['revoked_at'] or '-'}"
        )
    return 0


def token_revoke(config: Config, args: argparse.Namespace) -> int:
    from service.tokens import TokenNotFound, revoke_token

    async def revoke() -> None:
        async with open_database(config, migrate=False) as db:
            await revoke_token(db, args.id, actor=cli_actor())

    try:
        asyncio.run(revoke())
    except TokenNotFound as exc:
        print(f"bobgen: error: {exc}", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0
