"""`oai-gateway keys create|list|show|update|revoke|rotate` and `oai-gateway usage` (SPEC §10.2).

They work on the store directly (STORE_URL from `--store-url`, the environment or `.env`) and
call the same `KeyAdmin` functions as the admin API, so flags are validated exactly like JSON
fields and `--json` prints exactly what the API would answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import orjson
from dotenv import dotenv_values

from oai_gateway.errors import GatewayError
from oai_gateway.keys.admin import Json, KeyAdmin, Reply
from oai_gateway.keys.records import parse_time
from oai_gateway.keys.store import StoreUnavailableError, check_store_url, open_store

CLEARABLE = ("expires_at", "providers", "models", "limits", "budget", "metadata")
_LIMITS = ("rpm", "tpm", "max_parallel")
_USAGE_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "unpriced_requests",
)


def _key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="a label for the operator")
    parser.add_argument("--expires-at", help="ISO 8601 UTC time, e.g. 2026-12-31T00:00:00Z")
    parser.add_argument(
        "--provider", action="append", dest="providers", help="allowed provider (repeatable)"
    )
    parser.add_argument(
        "--model", action="append", dest="models", help="allowed provider/model (repeatable)"
    )
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="input + output tokens per minute")
    parser.add_argument("--max-parallel", type=int, help="requests in flight")
    parser.add_argument("--budget-usd", type=float, help="budget in USD (needs --budget-period)")
    parser.add_argument("--budget-tokens", type=int, help="budget in tokens")
    parser.add_argument("--budget-period", choices=("day", "week", "month", "total"))
    parser.add_argument(
        "--metadata", action="append", metavar="KEY=VALUE", help="operator metadata (repeatable)"
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store-url", help="where keys and usage live (STORE_URL)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def add_commands(commands: Any) -> None:
    """Add `keys …` and `usage` to the top-level subparsers."""
    keys = commands.add_parser("keys", help="manage virtual keys in the store")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key (its secret is shown once)")
    _key_flags(create)
    listing = actions.add_parser("list", help="list keys, newest first")
    listing.add_argument("--limit", help="keys per page (1-100, default 20)")
    listing.add_argument("--after", help="id of the last key of the previous page")
    update = actions.add_parser("update", help="change a key's fields")
    update.add_argument("id")
    _key_flags(update)
    update.add_argument("--clear", action="append", choices=CLEARABLE, default=[])
    for name, text in (
        ("show", "show one key"),
        ("revoke", "revoke a key"),
        ("rotate", "new secret"),
    ):
        actions.add_parser(name, help=text).add_argument("id")
    for parser in actions.choices.values():
        _common(parser)
    usage = commands.add_parser("usage", help="usage totals from the ledger")
    for name in ("key-id", "provider", "model", "since", "until"):
        usage.add_argument(f"--{name}")
    usage.add_argument("--group-by", help="comma-separated: key, model, provider, day")
    _common(usage)


def _metadata(pairs: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise _FlagError(f"--metadata: expected KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


class _FlagError(Exception):
    """A flag combination argparse cannot check; exit status 2 like argparse's own errors."""


def key_body(args: argparse.Namespace, current: Json | None = None) -> Json:
    """The flags as an admin API body; `current` (update) supplies the limits not given."""
    body: Json = {}
    for name in ("name", "expires_at", "providers", "models"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    limits = {n: getattr(args, n) for n in _LIMITS if getattr(args, n) is not None}
    if limits:
        body["limits"] = {**((current or {}).get("limits") or {}), **limits}
    if args.budget_usd is not None or args.budget_tokens is not None:
        if args.budget_period is None:
            raise _FlagError("--budget-period is required with --budget-usd/--budget-tokens")
        amount = {"usd": args.budget_usd} if args.budget_usd is not None else {}
        amount.update({"tokens": args.budget_tokens} if args.budget_tokens is not None else {})
        body["budget"] = {"period": args.budget_period, **amount}
    if args.metadata:
        body["metadata"] = {**((current or {}).get("metadata") or {}), **_metadata(args.metadata)}
    for name in getattr(args, "clear", []):
        body[name] = None
    return body


async def _update(admin: KeyAdmin, args: argparse.Namespace) -> Reply:
    _, current = await admin.show(args.id)
    return await admin.update(args.id, key_body(args, current))


def _usage_query(args: argparse.Namespace) -> dict[str, str]:
    names = ("key_id", "provider", "model", "since", "until", "group_by")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _operation(args: argparse.Namespace) -> Callable[[KeyAdmin], Coroutine[Any, Any, Reply]]:
    if args.command == "usage":
        return lambda admin: admin.usage(_usage_query(args))
    page = {n: getattr(args, n) for n in ("limit", "after") if getattr(args, n, None)}
    operations: dict[str, Callable[[KeyAdmin], Coroutine[Any, Any, Reply]]] = {
        "create": lambda admin: admin.create(key_body(args)),
        "list": lambda admin: admin.list(page),
        "show": lambda admin: admin.show(args.id),
        "update": lambda admin: _update(admin, args),
        "revoke": lambda admin: admin.revoke(args.id),
        "rotate": lambda admin: admin.rotate(args.id),
    }
    return operations[args.action]


async def _execute(url: str, args: argparse.Namespace) -> Reply:
    store = open_store(url)
    await store.start()
    try:
        return await _operation(args)(KeyAdmin(store))
    finally:
        await store.aclose()


def store_url(args: argparse.Namespace) -> str | None:
    # As for the settings, an empty variable counts as unset (then `.env` may supply it).
    url: str | None = args.store_url or os.environ.get("STORE_URL") or None
    return url or dotenv_values(".env").get("STORE_URL") or None


def run(args: argparse.Namespace) -> int:
    """Run one `keys` or `usage` command; 0 on success, 1 when the store refused, 2 on bad use."""
    url = store_url(args)
    if url is None:
        print(
            "oai-gateway: STORE_URL: not set (give it in the environment, .env or --store-url)",
            file=sys.stderr,
        )
        return 2
    try:
        check_store_url(url)
    except ValueError as exc:
        print(f"oai-gateway: STORE_URL: {exc}", file=sys.stderr)
        return 2
    try:
        _, answer = asyncio.run(_execute(url, args))
    except _FlagError as exc:
        print(f"oai-gateway: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"oai-gateway: {exc.message}", file=sys.stderr)
        return 1
    except StoreUnavailableError as exc:
        print(f"oai-gateway: store unavailable: {exc}", file=sys.stderr)
        return 1
    print(
        orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode()
        if args.json
        else render(args, answer)
    )
    return 0


def render(args: argparse.Namespace, answer: Json) -> str:
    """A human-readable form of an answer."""
    if args.command == "usage":
        return _table(answer["data"], _usage_columns(args))
    if args.action == "list":
        rows = [_key_summary(k) for k in answer["data"]]
        more = "\n(more: --after " + str(answer["last_id"]) + ")" if answer["has_more"] else ""
        return _table(rows, ("id", "name", "created_at", "status", "limits", "budget")) + more
    lines = [f"{name}: {_cell(value)}" for name, value in answer.items() if name != "key"]
    if "key" in answer:
        lines.append(f"key: {answer['key']}")
        lines.append("(the key is shown only now: store it safely)")
    return "\n".join(lines)


def _usage_columns(args: argparse.Namespace) -> tuple[str, ...]:
    grouped = [g.strip() for g in (args.group_by or "").split(",") if g.strip()]
    names = tuple(dict.fromkeys("key_id" if g == "key" else g for g in grouped))
    return names + _USAGE_COLUMNS


def _key_summary(key: Json) -> Json:
    expires = key.get("expires_at")
    status = "active"
    if key.get("revoked_at"):
        status = "revoked"
    elif expires and parse_time(expires) <= time.time():
        status = "expired"
    return {**key, "status": status}


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode() if value else "-"
    return str(value)


def _table(rows: Sequence[Json], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)
