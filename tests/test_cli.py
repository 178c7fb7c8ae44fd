"""The command line (SPEC §2): `serve` and `check-config`, run as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from oai_gateway.cli import main
from tests.conftest import CUSTOM_KEY
from tests.support.fake_upstreams import OpenAICompatUpstream
from tests.support.processes import (
    EXIT_TIMEOUT_S,
    GatewayProcess,
    base_env,
    run,
)
from tests.support.sockets import free_port

GW_SECRET = "gw-cli-secret-key-000111"
CUSTOM_SECRET = "sk-cli-custom-secret-222333"
GROQ_SECRET = "gsk-cli-groq-secret-444555"
SHORT_SECRET = "csk-short1"  # shorter than the mask keeps any of
ENTRY_POINTS = ("module", "script")


def write_providers(tmp_path: Path, base_url: str, name: str = "providers.toml") -> Path:
    path = tmp_path / name
    path.write_text(
        f'[providers.groq]\nkind = "openai"\nbase_url = "{base_url}"\n'
        'api_key_env = "GROQ_CLI_KEY"\nmodels = ["gpt-test"]\ntimeout_s = 7\n',
        encoding="utf-8",
    )
    return path


def assert_clean_failure(result: subprocess.CompletedProcess[str], expected_lines: int) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == expected_lines, result.stderr


# --- check-config -----------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_check_config_prints_providers_with_secrets_masked(tmp_path: Path, entry: str) -> None:
    providers = write_providers(tmp_path, "https://api.groq.example/openai/v1/")
    env = base_env(
        tmp_path,
        ALLOWED_API_KEYS=f"{GW_SECRET},another-gateway-key-xyz",
        CUSTOM_BASE_URL="http://127.0.0.1:8080/v1/",
        CUSTOM_API_KEY=CUSTOM_SECRET,
        CEREBRAS_API_KEY=SHORT_SECRET,
        PROVIDERS_FILE=str(providers),
        GROQ_CLI_KEY=GROQ_SECRET,
    )
    result = run(entry, ["check-config"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in (GW_SECRET, "another-gateway-key-xyz", CUSTOM_SECRET, GROQ_SECRET, SHORT_SECRET):
        assert secret not in output
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines()}
    assert "gateway keys: 2 configured" in result.stdout
    assert set(lines) >= {
        "provider ollama",
        "provider cerebras",
        "provider custom",
        "provider groq",
    }
    groq = lines["provider groq"]
    assert "kind=openai" in groq
    assert "base_url=https://api.groq.example/openai/v1 " in groq
    assert "models=gpt-test" in groq
    assert "timeout_s=7" in groq
    assert "key=none" not in groq
    assert "base_url=http://127.0.0.1:8080/v1 " in lines["provider custom"]
    assert "key=none" not in lines["provider custom"]
    assert "key=none" not in lines["provider cerebras"]
    assert "key=none" in lines["provider ollama"]


def test_check_config_reports_unconfigured_builtins(tmp_path: Path) -> None:
    result = run("module", ["check-config"], base_env(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines()}
    assert "CEREBRAS_API_KEY" in lines["provider cerebras"]
    assert "CUSTOM_BASE_URL" in lines["provider custom"]
    assert "listen: 127.0.0.1:8000" in result.stdout


def test_check_config_providers_file_flag_overrides_environment(tmp_path: Path) -> None:
    providers = write_providers(tmp_path, "http://127.0.0.1:8081/v1", name="flag.toml")
    env = base_env(
        tmp_path, PROVIDERS_FILE=str(tmp_path / "missing.toml"), GROQ_CLI_KEY=GROQ_SECRET
    )
    result = run("script", ["check-config", "--providers-file", str(providers)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "provider groq: kind=openai base_url=http://127.0.0.1:8081/v1 " in result.stdout
    assert GROQ_SECRET not in result.stdout + result.stderr


def test_check_config_reads_dotenv_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"SERVICE_PORT=9321\nCUSTOM_BASE_URL=http://127.0.0.1:8082/v1\nCUSTOM_API_KEY={CUSTOM_SECRET}\n",
        encoding="utf-8",
    )
    result = run("module", ["check-config"], base_env(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "listen: 127.0.0.1:9321" in result.stdout
    assert "provider custom: kind=openai base_url=http://127.0.0.1:8082/v1 " in result.stdout
    assert CUSTOM_SECRET not in result.stdout + result.stderr


def test_check_config_reports_one_line_per_problem(tmp_path: Path) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[providers.groq]\nkind = "openai"\nbase_url = "https://x.example/v1"\n'
        f'api_key = "{GROQ_SECRET}"\n',
        encoding="utf-8",
    )
    env = base_env(
        tmp_path,
        SERVICE_PORT="0",
        LOG_LEVEL="loud",
        CUSTOM_API_KEY=CUSTOM_SECRET,
        ALLOWED_API_KEYS=GW_SECRET,
        PROVIDERS_FILE=str(providers),
    )
    result = run("script", ["check-config"], env, tmp_path)
    assert_clean_failure(result, expected_lines=3)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "SERVICE_PORT" in lines[0]
    assert "LOG_LEVEL" in lines[1]
    assert str(providers) in lines[2]
    assert "groq" in lines[2]
    assert "api_key_env" in lines[2]
    for secret in (GROQ_SECRET, CUSTOM_SECRET, GW_SECRET):
        assert secret not in result.stderr


def test_check_config_refuses_open_non_loopback_binding(tmp_path: Path) -> None:
    result = run("module", ["check-config"], base_env(tmp_path, SERVICE_HOST="0.0.0.0"), tmp_path)
    assert_clean_failure(result, expected_lines=1)
    assert "ALLOWED_API_KEYS" in result.stderr
    assert "ALLOW_UNAUTHENTICATED" in result.stderr


# --- serve ------------------------------------------------------------------------------------


def test_serve_with_invalid_variable_exits_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, REQUEST_TIMEOUT_S="-1", ALLOWED_API_KEYS=GW_SECRET)
    result = run("module", ["serve", "--port", str(free_port())], env, tmp_path)
    assert_clean_failure(result, expected_lines=1)
    assert "REQUEST_TIMEOUT_S" in result.stderr
    assert GW_SECRET not in result.stderr


def test_serve_with_invalid_port_flag_names_the_setting(tmp_path: Path) -> None:
    result = run("script", ["serve", "--port", "70000"], base_env(tmp_path), tmp_path)
    assert_clean_failure(result, expected_lines=1)
    assert "SERVICE_PORT" in result.stderr


def test_serve_with_zero_workers_is_refused(tmp_path: Path) -> None:
    result = run("module", ["serve", "--workers", "0"], base_env(tmp_path), tmp_path)
    assert_clean_failure(result, expected_lines=1)
    assert "--workers" in result.stderr


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_serve_flags_override_environment_and_serve(
    tmp_path: Path, entry: str, custom_upstream: OpenAICompatUpstream
) -> None:
    port, env_port = free_port(), free_port()
    providers = write_providers(tmp_path, custom_upstream.base_url + "/v1", name="flag.toml")
    env = base_env(
        tmp_path,
        # Each of these would stop or misplace the server if the flag did not win over it.
        SERVICE_HOST="0.0.0.0",
        SERVICE_PORT=str(env_port),
        PROVIDERS_FILE=str(tmp_path / "missing.toml"),
        GROQ_CLI_KEY=CUSTOM_KEY,
        LOG_FORMAT="json",
    )
    args = ["--port", str(port), "--host", "127.0.0.1", "--providers-file", str(providers)]
    with GatewayProcess(entry, args, env, tmp_path, port) as gateway:
        gateway.wait_healthy()
        assert httpx.get(f"{gateway.url}/healthz", timeout=2).json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{env_port}/healthz", timeout=2)
        models = httpx.get(f"{gateway.url}/groq/v1/models", timeout=5)
        assert models.status_code == 200, models.text
        assert [m["id"] for m in models.json()["data"]] == ["gpt-test"]
        seen = [r for r in custom_upstream.requests if r.path == "/v1/models"]
        assert len(seen) == 1
        assert seen[0].headers["authorization"] == f"Bearer {CUSTOM_KEY}"
        started = time.monotonic()
        status = gateway.terminate()
        assert time.monotonic() - started < EXIT_TIMEOUT_S
    assert status in (0, -signal.SIGTERM)
    log = gateway.log()
    assert "Traceback" not in log
    assert "shutdown complete" in log.lower()


# --- in-process (same code paths, measured by coverage) -------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper() in {
            "SERVICE_HOST",
            "SERVICE_PORT",
            "ALLOWED_API_KEYS",
            "LOG_LEVEL",
            "CUSTOM_BASE_URL",
            "CUSTOM_API_KEY",
            "CEREBRAS_API_KEY",
            "PROVIDERS_FILE",
        }:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_main_check_config_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    providers = write_providers(tmp_path, "http://127.0.0.1:8081/v1")
    monkeypatch.setenv("GROQ_CLI_KEY", GROQ_SECRET)
    monkeypatch.setenv("CEREBRAS_API_KEY", SHORT_SECRET)
    assert main(["check-config", "--providers-file", str(providers)]) == 0
    out = capsys.readouterr()
    assert "provider groq: kind=openai base_url=http://127.0.0.1:8081/v1 key=gsk…55 " in out.out
    assert "provider cerebras: kind=cerebras " in out.out
    assert "key=****" in out.out
    assert GROQ_SECRET not in out.out + out.err
    assert SHORT_SECRET not in out.out + out.err


@pytest.mark.usefixtures("clean_env")
def test_main_reports_problems_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    monkeypatch.setenv("SERVICE_PORT", "99999")
    assert main(["serve"]) != 0
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 2
    assert "SERVICE_PORT" in lines[0]
    assert "LOG_LEVEL" in lines[1]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from the parent ids in /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone since the listing
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_two_workers_serve_then_stop_on_sigterm_with_status_0(
    tmp_path: Path, custom_upstream: OpenAICompatUpstream
) -> None:
    port = free_port()
    env = base_env(
        tmp_path,
        ALLOWED_API_KEYS=GW_SECRET,
        CUSTOM_BASE_URL=custom_upstream.base_url + "/v1",
        CUSTOM_API_KEY=CUSTOM_KEY,
    )
    with GatewayProcess(
        "module", ["--workers", "2", "--port", str(port)], env, tmp_path, port
    ) as gateway:
        gateway.wait_healthy()
        headers = {"authorization": f"Bearer {GW_SECRET}"}
        for _ in range(6):
            response = httpx.get(f"{gateway.url}/custom/v1/models", headers=headers, timeout=5)
            assert response.status_code == 200, response.text
        children = descendants(gateway.process.pid)
        # multiprocessing's resource tracker is a child too: count the spawned workers alone.
        workers = {pid for pid in children if "spawn_main" in command_line(pid)}
        assert len(workers) == 2, {pid: command_line(pid) for pid in children}
        status = gateway.terminate()
        log = gateway.log()
    assert status == 0, log
    assert "Traceback" not in log, log
    for pid in workers:  # each worker ran a server of its own
        assert f"Started server process [{pid}]" in log, log
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while (left := {pid for pid in children if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"worker processes outlived the supervisor: {left}"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
