"""The gateway in front of a real LLM, side by side with a direct call to the same server.

Usage::

    uv run python bench/real_llm.py [--runs 20] [--json bench/results/real_llm.json]

Sets up (scripts/setup_llm.py) and starts llama.cpp's llama-server with Gemma 3 270M, starts the
gateway as a separate process (`python -m oai_gateway serve`, as deployed: uvloop, httptools)
with llama-server as its `custom` provider, and measures, alternating direct and gateway runs so
that drift in the machine's load hits both alike:

- a 32-token chat stream: time to the first content token, and to `[DONE]`;
- a 1-token legacy completion (non-streaming): the whole request.

Both paths use the same HTTP client (one keep-alive httpx.Client each) and the same bodies,
with `ignore_eos` so every stream is exactly 32 tokens. The same prompt every time means
llama-server's prefix cache hits for both paths alike. Prints a Markdown table of medians
(and p90) with the gateway/direct ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import setup_llm
from llama_server import LlamaServer, free_port

KEY = "gw-bench-key"
MODEL = setup_llm.MODEL_ALIAS
STREAM_TOKENS = 32
WARMUP = 3
STREAM_BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
    "max_tokens": STREAM_TOKENS,
    "stream": True,
    "ignore_eos": True,
}
ONE_TOKEN_BODY = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 1}


@contextmanager
def gateway_process(upstream: str) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ)
    for name in ("PROVIDERS_FILE", "CUSTOM_API_KEY"):
        env.pop(name, None)
    env.update(
        CUSTOM_BASE_URL=upstream,
        ALLOWED_API_KEYS=KEY,
        LOG_LEVEL="WARNING",  # one access line per request would be measured too
    )
    command = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the gateway exited with status {process.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the gateway did not start within 30 s")
            time.sleep(0.05)
        yield url + "/custom/v1"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def stream_once(client: httpx.Client) -> tuple[float, float]:
    """(time to first content token, time to [DONE]) in seconds for one 32-token stream."""
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    with client.stream("POST", "/chat/completions", json=STREAM_BODY) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            for choice in json.loads(data).get("choices", []):
                if choice.get("delta", {}).get("content"):
                    tokens += 1
                    if first is None:
                        first = time.perf_counter() - start
    total = time.perf_counter() - start
    if first is None or tokens == 0:
        raise SystemExit("a stream ended without content")
    return first, total


def one_token_once(client: httpx.Client) -> float:
    start = time.perf_counter()
    response = client.post("/completions", json=ONE_TOKEN_BODY)
    response.raise_for_status()
    elapsed = time.perf_counter() - start
    if response.json()["usage"]["completion_tokens"] != 1:
        raise SystemExit("the 1-token completion did not produce exactly 1 token")
    return elapsed


def warm_up(clients: dict[str, httpx.Client], sample: Callable[[httpx.Client], object]) -> None:
    for _ in range(WARMUP):
        for client in clients.values():
            sample(client)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(runs: int) -> dict[str, dict[str, list[float]]]:
    state = setup_llm.setup(force=False)
    results: dict[str, dict[str, list[float]]] = {
        "stream_ttft": {"direct": [], "gateway": []},
        "stream_total": {"direct": [], "gateway": []},
        "one_token": {"direct": [], "gateway": []},
    }
    with tempfile.TemporaryDirectory() as scratch:
        server = LlamaServer(state, Path(scratch) / "llama-server.log")
        with server, gateway_process(server.base_url) as gateway_base:
            headers = {"authorization": f"Bearer {KEY}"}
            with (
                httpx.Client(base_url=server.base_url, timeout=60) as direct,
                httpx.Client(base_url=gateway_base, headers=headers, timeout=60) as gateway,
            ):
                clients = {"direct": direct, "gateway": gateway}
                warm_up(clients, stream_once)
                warm_up(clients, one_token_once)
                for _ in range(runs):
                    for name, client in clients.items():
                        ttft, total = stream_once(client)
                        results["stream_ttft"][name].append(ttft)
                        results["stream_total"][name].append(total)
                for _ in range(runs):
                    for name, client in clients.items():
                        results["one_token"][name].append(one_token_once(client))
    return results


LABELS = {
    "stream_ttft": f"chat stream, {STREAM_TOKENS} tokens: time to first token",
    "stream_total": f"chat stream, {STREAM_TOKENS} tokens: total",
    "one_token": "completion, 1 token (non-streaming)",
}


def table(results: dict[str, dict[str, list[float]]], runs: int) -> str:
    lines = [
        f"| {runs} runs each, ms | direct p50 | gateway p50 | ratio p50 | direct p90 "
        "| gateway p90 | gateway - direct p50 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in LABELS.items():
        direct = [v * 1000 for v in results[key]["direct"]]
        gateway = [v * 1000 for v in results[key]["gateway"]]
        d50, g50 = statistics.median(direct), statistics.median(gateway)
        lines.append(
            f"| {label} | {d50:.1f} | {g50:.1f} | {g50 / d50:.3f} | "
            f"{percentile(direct, 0.9):.1f} | {percentile(gateway, 0.9):.1f} | {g50 - d50:+.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="measured runs per path (default 20)")
    parser.add_argument("--json", type=Path, help="also write the raw samples (seconds) here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results = run(args.runs)
    print(table(results, args.runs))
    load = os.getloadavg()[0]
    print(f"\nload average during the run: {load:.2f} on {os.cpu_count()} cores")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
