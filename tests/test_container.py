"""The container files: no engine runs here, so check their structure and run what can be run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from oai_gateway.config.settings import Settings
from oai_gateway.keys.store import ADMIN_KEY_MIN
from tests.support.ci import running_in_ci
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


def test_has_a_data_directory_the_user_owns_for_a_sqlite_store() -> None:
    # A named volume copies the ownership of the image's directory it is mounted on.
    user = of(FINAL, "USER")[-1]
    assert any(
        f"install -d -o {user.replace(':', ' -g ')} -m 0750 /var/lib/oai-gateway" in run
        for run in of(FINAL, "RUN")
    )


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


SERVICES: dict[str, Any] = compose()["services"]
REPLICAS = ("gateway-1", "gateway-2")
SECRET_NAME = re.compile(r"(KEY|KEYS|SECRET|PASSWORD|TOKEN)$")


def test_compose_runs_two_replicas_redis_and_a_load_balancer_beside_ollama() -> None:
    assert set(SERVICES) == {"ollama", "redis", *REPLICAS, "lb"}
    for name in REPLICAS:
        replica = SERVICES[name]
        assert replica["build"] == "."
        assert replica["environment"]["OLLAMA_BASE_URL"] == "http://ollama:11434"
        assert replica["depends_on"] == {
            "ollama": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        # The image's HEALTHCHECK (tested above) stays in force: not overridden or disabled.
        assert "healthcheck" not in replica
    assert "healthcheck" in SERVICES["ollama"]


def test_replicas_share_one_store_on_the_redis_service() -> None:
    urls = {SERVICES[name]["environment"]["STORE_URL"] for name in REPLICAS}
    assert len(urls) == 1
    url = urlsplit(urls.pop())
    assert url.scheme == "redis"
    assert url.hostname in SERVICES  # the compose service, reached by name
    assert url.hostname == "redis"
    assert url.port == 6379


def test_redis_is_pinned_to_a_major_of_at_least_7_and_health_checked() -> None:
    redis = SERVICES["redis"]
    repository, _, tag = redis["image"].partition(":")
    assert repository == "redis"
    major = re.match(r"\d+", tag)
    assert major is not None, f"no pinned version in {redis['image']!r}"
    assert int(major.group()) >= 7
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis  # reachable from the replicas only


def test_keys_are_required_from_the_environment_never_written_here() -> None:
    for name in REPLICAS:
        env = SERVICES[name]["environment"]
        # Compose refuses to start without keys rather than serving 0.0.0.0 unauthenticated.
        assert env["ALLOWED_API_KEYS"].startswith("${ALLOWED_API_KEYS:?")
        assert env["ADMIN_API_KEY"].startswith("${ADMIN_API_KEY:?")
        assert f"at least {ADMIN_KEY_MIN}" in env["ADMIN_API_KEY"]
    for service in SERVICES.values():
        for variable, value in service.get("environment", {}).items():
            if SECRET_NAME.search(variable):
                assert re.fullmatch(rf"\$\{{{variable}(:\?[^}}]+|:-)\}}", value), variable
        for word in service.get("command", []):
            assert "requirepass" not in word
    assert urlsplit(SERVICES["gateway-1"]["environment"]["STORE_URL"]).password is None


def test_only_the_load_balancer_is_published_on_loopback() -> None:
    published = {name: svc["ports"] for name, svc in SERVICES.items() if "ports" in svc}
    assert published == {"lb": ["127.0.0.1:8000:8000"]}
    lb = SERVICES["lb"]
    repository, _, tag = lb["image"].partition(":")
    assert repository in ("nginx", "haproxy")
    assert re.match(r"\d+\.\d+", tag), f"no pinned version in {lb['image']!r}"
    assert lb["volumes"] == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert lb["depends_on"] == {name: {"condition": "service_healthy"} for name in REPLICAS}
    assert "/healthz" in " ".join(lb["healthcheck"]["test"])


NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
NGINX_TOKEN = re.compile(r"""#[^\n]*|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|[{};]|[^\s{};'"#]+""")


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive]


def nginx_directives(text: str) -> list[Directive]:
    """nginx.conf as nested directives: quoted arguments unquoted, comments dropped."""
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    for token in NGINX_TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token in (";", "{"):
            directive = Directive(words[0], [w.strip("'\"") for w in words[1:]], [])
            stack[-1].append(directive)
            words = []
            if token == "{":
                stack.append(directive.block)
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1, "unbalanced braces in nginx.conf"
    assert not words, f"unterminated directive {words}"
    return stack[0]


def find(directives: list[Directive], *path: str) -> list[Directive]:
    found = [d for d in directives if d.name == path[0]]
    if len(path) == 1:
        return found
    return [hit for d in found for hit in find(d.block, *path[1:])]


def one(directives: list[Directive], *path: str) -> list[str]:
    [hit] = find(directives, *path)
    return hit.args


NGINX = nginx_directives(NGINX_CONF)
DEFAULTS = Settings.model_fields


def test_load_balancer_sends_to_both_replicas_over_kept_alive_http11() -> None:
    servers = [d.args[0] for d in find(NGINX, "http", "upstream", "server")]
    port = Settings.model_fields["service_port"].default
    assert sorted(servers) == [f"{name}:{port}" for name in REPLICAS]
    [upstream] = find(NGINX, "http", "upstream")
    [location] = [d for d in find(NGINX, "http", "server", "location") if d.args == ["/"]]
    assert one(location.block, "proxy_pass") == [f"http://{upstream.args[0]}"]
    assert one(location.block, "proxy_http_version") == ["1.1"]
    headers = {d.args[0]: d.args[1] for d in find(location.block, "proxy_set_header")}
    assert headers["Connection"] == ""  # no "close": upstream connections are reused
    assert int(one(upstream.block, "keepalive")[0]) > 0
    # Closed by nginx before the gateway closes an idle connection itself.
    idle = one(upstream.block, "keepalive_timeout")[0]
    assert float(idle.removesuffix("s")) < DEFAULTS["server_keepalive_s"].default


def test_load_balancer_is_safe_for_streams_and_large_bodies() -> None:
    [location] = [d for d in find(NGINX, "http", "server", "location") if d.args == ["/"]]
    assert one(location.block, "proxy_buffering") == ["off"]
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = float(one(location.block, timeout)[0].removesuffix("s"))
        assert seconds > DEFAULTS["request_timeout_s"].default, timeout
    limit = int(one(NGINX, "http", "server", "client_max_body_size")[0])
    for name in REPLICAS:
        assert int(SERVICES[name]["environment"]["MAX_REQUEST_BYTES"]) == limit
    assert limit == DEFAULTS["max_request_bytes"].default
    assert one(NGINX, "http", "server", "listen") == [str(DEFAULTS["service_port"].default)]


def test_load_balancer_answers_its_own_errors_in_the_openai_shape() -> None:
    locations = {d.args[0]: d for d in find(NGINX, "http", "server", "location")}
    pages = {d.args[-1]: d.args[:-1] for d in find(NGINX, "http", "server", "error_page")}
    # `=N` sets the answer's status: without it nginx keeps the original one (a 502 stays 502).
    assert pages == {"@too_large": ["413", "=413"], "@no_replica": ["502", "503", "504", "=503"]}
    for name, codes in pages.items():
        status, body = one(locations[name].block, "return")
        assert f"={status}" == codes[-1]
        error = json.loads(body.replace("\\'", "'"))["error"]
        assert set(error) == {"message", "type", "param", "code"}


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if Path(path).exists()), None
    )
    if found is None:
        message = "nginx not found: `make test` installs it (Debian package nginx)"
        if running_in_ci():
            pytest.fail(message)
        pytest.skip(f"{message} (CI fails here)")
    return found


def test_nginx_accepts_the_load_balancer_config(tmp_path: Path) -> None:
    # `nginx -t` resolves upstream names: the compose service names exist only in compose.
    local = NGINX_CONF
    for name in REPLICAS:
        local = local.replace(f"{name}:", "127.0.0.1:")
    assert local != NGINX_CONF
    conf = tmp_path / "nginx.conf"
    conf.write_text(local, encoding="utf-8")
    result = subprocess.run(
        [nginx_binary(), "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
