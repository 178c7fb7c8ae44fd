"""`oai-gateway serve` and `check-config` (SPEC §2); `keys` and `usage` come from `keys/cli.py`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import SecretStr

from oai_gateway.app import GatewayApp, create_app
from oai_gateway.config.loader import Config, load_config
from oai_gateway.config.settings import ConfigError, ProviderSpec, Settings
from oai_gateway.keys import cli as keys_cli
from oai_gateway.observability.log import configure_logging
from oai_gateway.observability.metrics import MULTIPROCESS_ENV
from oai_gateway.observability.redact import Redactor
from oai_gateway.server.protocol import EdgeLimits, EnvelopeHttpToolsProtocol, protocol_for

# Flags of the server edge, each overriding the setting it names.
_EDGE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--head-timeout-s", float, "server_head_timeout_s"),
    ("--max-head-bytes", int, "server_max_head_bytes"),
    ("--max-connections", int, "server_max_connections"),
    ("--keepalive-s", float, "server_keepalive_s"),
)


MEMORY_STORE_WORKERS = (
    "STORE_URL: memory:// keeps keys and limit counters inside one process, so with --workers "
    "> 1 every worker would count alone; use sqlite:///ABS/PATH.db (one host) or redis://…"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oai-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="address to bind (SERVICE_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (SERVICE_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--providers-file", help="TOML providers file (PROVIDERS_FILE)")
    edge = serve.add_argument_group("server edge (per worker; see docs/configuration.md)")
    for flag, kind, variable in _EDGE_FLAGS:
        edge.add_argument(flag, type=kind, help=f"({variable.upper()})")
    check = commands.add_parser("check-config", help="validate the configuration and exit")
    check.add_argument("--providers-file", help="TOML providers file (PROVIDERS_FILE)")
    keys_cli.add_commands(commands)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    edge = {name: getattr(args, flag[2:].replace("-", "_"), None) for flag, _, name in _EDGE_FLAGS}
    return {
        "service_host": getattr(args, "host", None),
        "service_port": getattr(args, "port", None),
        "providers_file": args.providers_file,
        **edge,
    }


def edge_limits(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        head_timeout_s=settings.server_head_timeout_s,
        max_head_bytes=settings.server_max_head_bytes,
        max_connections=settings.server_max_connections,
        keepalive_s=settings.server_keepalive_s,
    )


def worker_app() -> GatewayApp:
    """Factory for worker processes, which each read the configuration once at their start."""
    config = load_config()
    configure_logging(
        config.settings.log_level, config.settings.log_format, Redactor(config.secrets())
    )
    # A worker is its own process serving only this configuration: its protocol class is set once.
    EnvelopeHttpToolsProtocol.limits = edge_limits(config.settings)
    return create_app(config)


def _fail(problems: Sequence[str]) -> int:
    for problem in problems:
        print(f"oai-gateway: configuration error: {problem}", file=sys.stderr)
    return 2


def _mask(secret: str) -> str:
    return "****" if len(secret) < 12 else f"{secret[:3]}…{secret[-2:]}"


def _masked_key(key: SecretStr | None) -> str:
    return _mask(key.get_secret_value()) if key else "none"


def _print_routing(spec: ProviderSpec) -> None:
    """The resolved upstreams and fallbacks of a provider served by SPEC §11's attempt loop."""
    ttft = f"{spec.ttft_timeout_s:g}" if spec.ttft_timeout_s is not None else "none"
    print(
        f"  routing: strategy={spec.strategy} max_attempts={spec.max_attempts} "
        f"ttft_timeout_s={ttft}"
    )
    for i, upstream in enumerate(spec.upstreams):
        print(
            f"  upstream {spec.name}/{i}: base_url={upstream.base_url} "
            f"key={_masked_key(upstream.api_key)} weight={upstream.weight}"
        )
    for model, targets in spec.fallbacks.items():
        print(f"  fallbacks {model}: {', '.join(targets)}")


def check_config(config: Config) -> int:
    settings = config.settings
    print(f"listen: {settings.service_host}:{settings.service_port}")
    print(f"gateway keys: {len(settings.allowed_api_keys)} configured")
    for spec in config.providers:
        models = ", ".join(sorted(spec.models)) if spec.models is not None else "any"
        state = f"not configured ({spec.unconfigured})" if spec.unconfigured else "ok"
        print(
            f"provider {spec.name}: kind={spec.kind} base_url={spec.base_url or '-'} "
            f"key={_masked_key(spec.api_key)} models={models} timeout_s={spec.timeout_s:g} "
            f"status={state}"
        )
        if spec.routed:
            _print_routing(spec)
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _server_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.service_host,
        "port": settings.service_port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "http": protocol_for(edge_limits(settings)),
        "ws": "none",
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "log_config": None,
        # On SIGTERM uvicorn stops accepting at once and waits this long for in-flight
        # requests and streams; the app's lifespan then closes the upstream pools.
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
    }


def _serve_workers(settings: Settings, workers: int, options: dict[str, Any]) -> None:
    # Workers are separate processes that build their own app from the environment, so the
    # flags travel to them as the variables they override.
    os.environ["SERVICE_HOST"] = settings.service_host
    os.environ["SERVICE_PORT"] = str(settings.service_port)
    if settings.providers_file is not None:
        os.environ["PROVIDERS_FILE"] = str(settings.providers_file)
    for _, _, name in _EDGE_FLAGS:
        os.environ[name.upper()] = str(getattr(settings, name))
    # The protocol class travels to the workers by name, so it is the module's own one.
    options["http"] = EnvelopeHttpToolsProtocol
    with tempfile.TemporaryDirectory(prefix="oai-gateway-metrics-") as metrics_dir:
        os.environ.setdefault(MULTIPROCESS_ENV, metrics_dir)
        uvicorn.run("oai_gateway.cli:worker_app", factory=True, workers=workers, **options)


def serve(config: Config, workers: int) -> int:
    settings = config.settings
    configure_logging(settings.log_level, settings.log_format, Redactor(config.secrets()))
    options = _server_options(settings)
    if workers > 1:
        _serve_workers(settings, workers, options)
        return 0
    # uvicorn re-raises the SIGTERM it shut down on; under the default handler that would
    # end a clean, drained shutdown with "killed by signal" instead of exit status 0.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(create_app(config), **options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("keys", "usage"):
        return keys_cli.run(args)  # the store only: no providers or server settings needed
    if getattr(args, "workers", 1) < 1:
        return _fail(["--workers: must be 1 or more"])
    try:
        config = load_config(_overrides(args))
    except ConfigError as exc:
        return _fail(exc.problems)
    if args.command == "check-config":
        return check_config(config)
    if args.workers > 1 and config.settings.store_url == "memory://":
        return _fail([MEMORY_STORE_WORKERS])
    return serve(config, args.workers)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
