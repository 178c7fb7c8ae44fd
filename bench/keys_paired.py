"""Virtual keys against the static key on the SAME gateway process, in alternation.

    uv run python bench/keys_paired.py [--rounds 3] [--seconds 5] [--stores sqlite,redis]

For each store the script starts one gateway (STORE_URL set, ALLOWED_API_KEYS the static bench
key) and issues two virtual keys straight into its store: one without limits, one with rpm +
tpm limits far above the load (so every request runs admission and settlement). Per round it
measures the static key and each virtual key back to back: chat c=1 p50 and c=64 requests/s
(wrk), the gateway's CPU time per request at c=64, and c=16 streams/s. Alternating on one
process cancels most of the drift of a shared machine that separate runs of bench/run.py
suffer from. Prints medians over the rounds and the differences or ratios to the static key.
Pinning and tools as in bench/run.py (wrk needed); only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keys_targets
import run
from oai_gateway.keys.records import Limits

KEYS = ("static", "vkey-no-limits", "vkey-rpm-tpm")


def measure_store(
    store: str, rounds: int, seconds: float, upstream: str
) -> dict[str, dict[str, list[float]]]:
    url = keys_targets.store_url(store, run.pinned)
    keys = {
        "static": run.KEY,
        "vkey-no-limits": keys_targets.issue_key(url, Limits()),
        "vkey-rpm-tpm": keys_targets.issue_key(url, keys_targets.HIGH),
    }
    port = run.free_port()
    argv = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    target = run._start_local(
        f"gateway-{store}", argv, port, {**run._gateway_env(upstream), "STORE_URL": url}
    )
    chat = target.base + "/chat/completions"
    figures: dict[str, dict[str, list[float]]] = {k: {} for k in keys}
    try:
        for _ in range(rounds):
            for name, key in keys.items():
                headers = {"authorization": f"Bearer {key}"}
                one = run.wrk(chat, 1, seconds, run.CHAT, headers)
                many: list[run.WrkResult] = []

                def load(out: list[run.WrkResult] = many, sent: dict[str, str] = headers) -> int:
                    out.append(run.wrk(chat, 64, seconds, run.CHAT, sent))
                    return out[-1].requests

                _, cpu = run.cpu_per(target, load)
                streamed = run.streams(chat, 16, 600, headers)
                add = figures[name].setdefault
                add("c=1 p50 ms", []).append(one.p50_ms)
                add("c=64 req/s", []).append(many[0].requests_per_s)
                add("c=64 cpu ms/req", []).append(cpu or 0.0)
                add("c=16 streams/s", []).append(streamed.streams_per_s)
    finally:
        assert target.process is not None
        target.process.stop()
    return figures


def report(store: str, figures: dict[str, dict[str, list[float]]]) -> str:
    static = {k: statistics.median(v) for k, v in figures["static"].items()}
    lines = [f"| {store} | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for metric in ("c=1 p50 ms", "c=64 req/s", "c=64 cpu ms/req", "c=16 streams/s"):
        cells = []
        for name in KEYS:
            value = statistics.median(figures[name][metric])
            if name == "static":
                cells.append(f"{value:,.3f}")
            elif metric.endswith(("ms", "ms/req")):
                cells.append(f"{value:,.3f} ({value - static[metric]:+.3f})")
            else:
                cells.append(f"{value:,.0f} ({value / static[metric]:.2f}x)")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args(argv)
    upstream_port = run.free_port()
    upstream = run.start_upstream(upstream_port, chunks=20)
    try:
        for store in args.stores.split(","):
            figures = measure_store(
                store, args.rounds, args.seconds, f"http://127.0.0.1:{upstream_port}/v1"
            )
            print(report(store, figures) + "\n", flush=True)
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
