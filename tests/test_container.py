"""The container files: no engine runs here, so check their structure and run what can be run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import GatewayServer
from tests.support.sockets import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "a continuation line ends the file"
    return result


def stages(items: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for item in items:
        if item.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
STAGES = stages(instructions(DOCKERFILE))
BUILD, FINAL = STAGES[0], STAGES[-1]


def of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def test_multi_stage_on_a_slim_python_base() -> None:
    assert len(STAGES) == 2
    assert BUILD[0].args.endswith("AS build")
    assert FINAL[0].args.endswith("AS runtime")
    base = [line for line in DOCKERFILE.splitlines() if line.startswith("ARG PYTHON_IMAGE=")]
    assert base == ["ARG PYTHON_IMAGE=python:3.11-slim-bookworm"]


def test_build_installs_exactly_the_lock_without_dev_tools() -> None:
    syncs = [run for run in of(BUILD, "RUN") if "uv sync" in run]
    assert len(syncs) == 2
    for sync in syncs:
        flags = sync.split()
        assert "--frozen" in flags  # the lock as committed; never re-resolved in the build
        assert "--no-dev" in flags
    assert "--no-editable" in syncs[-1].split()
    copied = " ".join(of(BUILD, "COPY"))
    assert "uv.lock" in copied
    assert "pyproject.toml" in copied


def test_runtime_stage_has_only_the_venv_and_no_uv() -> None:
    copies = of(FINAL, "COPY")
    assert copies == ["--from=build /opt/venv /opt/venv"]
    assert not any("uv " in run for run in of(FINAL, "RUN"))


def test_runs_as_a_non_root_user() -> None:
    users = of(FINAL, "USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # The id exists: created in the final stage.
    assert any(f"--uid {user}" in run for run in of(FINAL, "RUN"))
    # Nothing after the USER switches back.
    last_user = max(i for i, item in enumerate(FINAL) if item.keyword == "USER")
    assert all(item.keyword != "USER" for item in FINAL[last_user + 1 :])


def test_listens_on_all_interfaces_and_says_keys_are_then_required() -> None:
    env = " ".join(of(FINAL, "ENV"))
    assert "SERVICE_HOST=0.0.0.0" in env
    assert "ALLOWED_API_KEYS" in DOCKERFILE
    assert "SPEC §4.1" in DOCKERFILE
    assert of(FINAL, "ENTRYPOINT") == ['["oai-gateway"]']
    assert of(FINAL, "CMD") == ['["serve"]']


def healthcheck_command() -> list[str]:
    [check] = of(FINAL, "HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    parsed: list[str] = json.loads(command)
    return parsed


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    command = healthcheck_command()
    assert command[0] == "python"  # slim has no curl
    env = {"PATH": os.environ.get("PATH", ""), "SERVICE_PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_healthcheck_passes_against_a_serving_gateway(gateway: GatewayServer) -> None:
    assert "/healthz" in " ".join(healthcheck_command())
    result = run_healthcheck(gateway.port)
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    result = run_healthcheck(free_port())
    assert result.returncode != 0
    assert "Connection refused" in result.stderr


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    # Allow-list: everything excluded, then only what the build stage copies.
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "src"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    )
    return loaded


def test_compose_runs_the_gateway_beside_ollama() -> None:
    services = compose()["services"]
    assert set(services) == {"ollama", "gateway"}
    gateway = services["gateway"]
    assert gateway["build"] == "."
    env = gateway["environment"]
    assert env["OLLAMA_BASE_URL"] == "http://ollama:11434"
    # Compose refuses to start without keys rather than serving 0.0.0.0 unauthenticated.
    assert env["ALLOWED_API_KEYS"].startswith("${ALLOWED_API_KEYS:?")
    assert gateway["depends_on"] == {"ollama": {"condition": "service_healthy"}}
    assert gateway["ports"] == ["127.0.0.1:8000:8000"]
    assert "healthcheck" in services["ollama"]
