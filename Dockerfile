# syntax=docker/dockerfile:1
# oai-gateway container image (docs/operations.md). Not built in CI: no container engine there;
# tests/test_container.py checks this file's structure and runs its HEALTHCHECK command.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: resolve nothing, install exactly uv.lock into a self-contained venv ---------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, in their own layer, so a source change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --extra tracing
COPY README.md ./
COPY src ./src
# --no-editable: the package lands in the venv, so the final stage needs no source tree.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra tracing

# --- runtime: the venv and an unprivileged user, no build tools, no uv -----------------------
FROM ${PYTHON_IMAGE} AS runtime
# /var/lib/oai-gateway: where a one-host SQLite store (STORE_URL) lives; a named volume mounted
# there starts out owned by the gateway user, so the unprivileged process can write it.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/oai-gateway
COPY --from=build /opt/venv /opt/venv
# SERVICE_HOST=0.0.0.0 so the published port reaches the gateway. On a non-loopback address the
# gateway refuses to start without keys (SPEC §4.1): set ALLOWED_API_KEYS when running the image
# (or, only behind your own authenticating proxy, ALLOW_UNAUTHENTICATED=true).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVICE_HOST=0.0.0.0 \
    SERVICE_PORT=8000
# An empty working directory: no stray .env is read from it (configuration comes from -e/env).
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# slim has no curl; the interpreter's urllib is enough. Non-2xx and refused connections raise.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SERVICE_PORT', '8000') + '/healthz', timeout=2)"]
# uvicorn stops on SIGTERM: in-flight requests get the grace period (SHUTDOWN_GRACE_S).
STOPSIGNAL SIGTERM
ENTRYPOINT ["oai-gateway"]
CMD ["serve"]
