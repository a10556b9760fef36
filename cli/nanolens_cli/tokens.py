"""``nanolens token create``: a new random bearer token and the entry for the gateway's token table.

The token is printed once, for the caller to keep; the gateway's Secret
(``NANOLENS_GATEWAY_TOKENS``) holds only its SHA-256 in the entry.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time

from nanolens_gateway.auth import ACTIONS, parse_tokens, token_digest

_DURATION = re.compile(r"^(\d+)([hd])$")


def expiry(value: str, now: float | None = None) -> str:
    """``30d`` / ``12h`` from now, or an ISO 8601 time, as an ISO 8601 UTC time."""
    match = _DURATION.match(value)
    if match:
        seconds = int(match.group(1)) * (3600 if match.group(2) == "h" else 86400)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((time.time() if now is None else now) + seconds))
    return value


def cmd_token_create(args) -> int:
    token = secrets.token_urlsafe(32)
    entry = {"name": args.name, "sha256": token_digest(token), "actions": sorted(set(args.actions.split(",")))}
    if args.scope:
        entry["scopes"] = args.scope
    if args.expires:
        entry["expires"] = expiry(args.expires)
    try:
        parse_tokens(json.dumps([entry]))  # the gateway's own check, before anyone stores it
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"token (shown once; the caller sends 'authorization: Bearer <token>'):\n{token}", file=sys.stderr)
    print(json.dumps(entry))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser("token", help="bearer tokens for the gateway")
    tsub = token.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="print a new token (stderr) and its entry for NANOLENS_GATEWAY_TOKENS "
                                            "(stdout, JSON)")
    create.add_argument("--name", required=True, help="who holds it (appears in the audit log)")
    create.add_argument("--actions", required=True, help=f"comma-separated, of {', '.join(ACTIONS)}")
    create.add_argument("--scope", action="append", default=[],
                        help="'<bucket>/<prefix>' it reaches, e.g. raw/tem-01/ (repeatable; none: every object)")
    create.add_argument("--expires", default="", help="30d, 12h or an ISO 8601 time (default: never)")
    create.set_defaults(func=cmd_token_create)
