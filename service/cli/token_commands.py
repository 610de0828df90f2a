"""``condense token create | list | revoke``: API tokens.

``create`` writes to the metadata database (run it where the service's settings are, as its operator). ``list`` and
``revoke`` work both ways: with a USER argument they use the database (an operator managing anyone's tokens);
without one they go through the API as the caller (``--server`` / ``--token`` or ``CONDENSE_SERVER`` /
``CONDENSE_TOKEN``), for a user managing their own tokens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from typing import Any

__all__ = ["add_token_commands"]


def _metadata():
    from service.settings import Settings
    from storage import open_metadata_store

    return open_metadata_store(Settings.from_env().database_url)


def _client(args: argparse.Namespace):
    from service.cli.client import Client

    return Client(
        args.server or os.environ.get("CONDENSE_SERVER", ""), args.token or os.environ.get("CONDENSE_TOKEN", "")
    )


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_tokens(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'id':>5}  {'state':<8} {'created':<21} {'expires':<21} label")
    for row in rows:
        print(
            f"{row['id']:>5}  {row['state']:<8} {_when(row['created_at']):<21} {_when(row['expires_at']):<21} "
            f"{row['label']}"
        )


def _cmd_create(args: argparse.Namespace) -> int:
    expires_in_s = None if args.expires_days is None else args.expires_days * 86400.0
    if expires_in_s is not None and expires_in_s <= 0:
        raise ValueError("--expires-days must be > 0")
    with _metadata() as metadata:
        token = metadata.create_token(args.user, args.label, expires_in_s=expires_in_s)
    print(token)
    print("store it now: it is not shown again (only its hash is kept)", file=sys.stderr)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.user is None:
        rows = _client(args).tokens()
    else:
        from service.api.tokens import token_view

        with _metadata() as metadata:
            if metadata.get_user(args.user) is None:
                raise ValueError(f"no user named {args.user!r}")
            now = time.time()
            rows = [token_view(token, now) for token in metadata.list_tokens(args.user)]
    _print_tokens(rows, args.json)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    if args.user is None:
        _client(args).revoke_token(args.id)
    else:
        with _metadata() as metadata:
            if not metadata.revoke_token(args.id, user_name=args.user):
                raise ValueError(f"{args.user} has no active token {args.id} (see 'condense token list {args.user}')")
    print(f"token {args.id} revoked; browsers signed in with it are signed out", file=sys.stderr)
    return 0


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="without USER: the service's URL (env CONDENSE_SERVER)")
    parser.add_argument("--token", help="without USER: your API token (env CONDENSE_TOKEN)")


def add_token_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``condense token ...`` to the ``condense`` parser."""
    token = commands.add_parser("token", help="manage API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="create an API token for a user (printed once)")
    create.add_argument("user")
    create.add_argument("--label", default="", help="what the token is for (e.g. 'CI')")
    create.add_argument("--expires-days", type=float, help="the token stops working after this many days")
    create.set_defaults(run=_cmd_create)

    listing = token.add_parser("list", help="list API tokens: USER's (database) or your own (API)")
    listing.add_argument("user", nargs="?", help="a user (read from the database); omit to list your own")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    _api_options(listing)
    listing.set_defaults(run=_cmd_list)

    revoke = token.add_parser("revoke", help="revoke an API token by its id (from 'condense token list')")
    revoke.add_argument("id", type=int, help="the token's id")
    revoke.add_argument("user", nargs="?", help="the token's user (database); omit to revoke one of your own")
    _api_options(revoke)
    revoke.set_defaults(run=_cmd_revoke)
