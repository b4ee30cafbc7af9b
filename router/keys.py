"""`python -m router.keys new NAME --scopes predict,jobs [--rate 100/s]`:
make an API key. The key is printed once; the router keeps only its sha256,
in the entry printed beside it for API_KEYS (or API_KEYS_FILE)."""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
from typing import Sequence

from pydantic import ValidationError

from router.settings import SCOPES, ApiKey

PREFIX = "rk_"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def entry(name: str, key: str, scopes: list[str], rate: str | None) -> dict:
    """The API_KEYS entry for `key`, validated as the router will validate it."""
    data = {"name": name, "key_sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": sorted(set(scopes))}
    if rate:
        data["rate"] = rate
    return ApiKey.model_validate(data).model_dump(exclude_none=True, mode="json") | {"scopes": data["scopes"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make a key: prints the key once, and its API_KEYS entry")
    new.add_argument("name", help="the key's name, as it appears in logs (e.g. team-search)")
    new.add_argument("--scopes", required=True, help=f"comma-separated, from: {', '.join(SCOPES)}")
    new.add_argument("--rate", help="its own rate limit, e.g. 100/s or 6000/minute (default: RATE_LIMIT)")
    new.add_argument("--json", action="store_true", help="print one JSON object {key, entry} instead")
    args = parser.parse_args(argv)
    key = new_key()
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        item = entry(args.name, key, scopes, args.rate)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"error: {where}: {first['msg']}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"key": key, "entry": item}))
        return 0
    print(f"key (shown once; give it to the client, keep it secret):\n  {key}\n")
    print(f"API_KEYS entry (add it to the list in API_KEYS or API_KEYS_FILE):\n  {json.dumps(item)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
