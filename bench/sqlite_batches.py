"""How many admissions share one SQLite transaction when the gateway runs at full speed.

    uv run python bench/sqlite_batches.py [--concurrency 1,16,64] [--seconds 5]

One gateway with a limited virtual key on SQLite (`keys_targets.HIGH`, a full window), wrk for
`--seconds` at each concurrency, pinned as in bench/run.py. A counter wraps the store's batch
function in the gateway process (loaded through a `sitecustomize` module on its PYTHONPATH) and
writes its histogram to a file every 200 ms from a thread of its own. Prints, per concurrency,
the requests served, the batches of one admission and the two batch sizes that carried the
most requests. wrk needed; only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keys_targets
import run

_COUNTER = """
import collections, json, os, threading, time
from oai_gateway.keys import store_sqlite

_sizes = collections.Counter()
_real = store_sqlite._batch

def _dump_every_200_ms():
    path = os.environ["BATCH_SIZES_OUT"]
    while True:
        time.sleep(0.2)
        with open(path + ".tmp", "w") as out:
            json.dump(dict(_sizes), out)
        os.replace(path + ".tmp", path)

def _counted(pending, admitting):
    _sizes[len(admitting)] += 1
    return _real(pending, admitting)

store_sqlite._batch = _counted
threading.Thread(target=_dump_every_200_ms, daemon=True).start()
"""


def _sizes(path: Path) -> Counter[int]:
    if not path.exists():
        return Counter()
    return Counter({int(size): count for size, count in json.loads(path.read_text()).items()})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="oai-gateway-bench-batches-"))
    (work / "sitecustomize.py").write_text(_COUNTER, encoding="utf-8")
    out = work / "sizes.json"
    upstream_port = run.free_port()
    upstream = run.start_upstream(upstream_port, 20)
    url = keys_targets.store_url("sqlite", run.pinned)
    key = keys_targets.issue_key(url, keys_targets.HIGH)
    port = run.free_port()
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {
        **os.environ,
        "CUSTOM_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "ALLOWED_API_KEYS": run.KEY,
        "STORE_URL": url,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": f"{work}:{os.environ.get('PYTHONPATH', src)}",
        "BATCH_SIZES_OUT": str(out),
    }
    argv_ = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    gateway = subprocess.Popen(run.pinned(0, argv_), env=env)
    chat = f"http://127.0.0.1:{port}/custom/v1/chat/completions"
    auth = {"authorization": f"Bearer {key}"}
    print("| concurrency | requests | batches of one (share of requests) | batches carrying most |")
    print("|---|---|---|---|")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: until the gateway takes connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        run.wrk(chat, 1, 1, run.CHAT, auth)  # warm-up, not counted
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            time.sleep(1.0)  # the previous run's batches are counted
            before = _sizes(out)
            result = run.wrk(chat, concurrency, args.seconds, run.CHAT, auth)
            time.sleep(1.0)
            sizes = _sizes(out) - before
            ones = sizes.get(1, 0)
            # the batch sizes that carried the most requests
            carried = sorted((size for size in sizes if size > 1), key=lambda s: -s * sizes[s])
            shown = ", ".join(
                f"{sizes[s]} of {s} ({s * sizes[s] / max(result.requests, 1):.0%})"
                for s in carried[:2]
            )
            share = ones / max(result.requests, 1)
            row = [f"{concurrency}", f"{result.requests:,}", f"{ones:,} ({share:.0%})"]
            print("| " + " | ".join([*row, shown or "none"]) + " |")
    finally:
        gateway.terminate()
        gateway.wait(60)
        upstream.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
