"""Logging setup: JSON or text lines, every one passed through the single redaction point."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from oai_gateway.observability.redact import Redactor

ACCESS_LOGGER = "oai_gateway.access"
# What follows "ts" in every JSON access line, as orjson would write it.
_ACCESS_MEMBERS = f'"level":"INFO","logger":"{ACCESS_LOGGER}","message":"request"'
# uvicorn adds an ANSI-coloured copy of its messages; it has no place in a log file. `asctime`
# is set by the text format itself and would repeat the line's timestamp as a field.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class _Clock:
    """Timestamps with one strftime per second: the access log writes a line per request.

    The milliseconds and what follows them come from a table made once, not a formatted int.
    """

    def __init__(self, pattern: str, utc: bool, separator: str, suffix: str = "") -> None:
        self._pattern = pattern
        self._convert = time.gmtime if utc else time.localtime
        self._millis = [f"{separator}{ms:03d}{suffix}" for ms in range(1000)]
        self._second = -1
        self._text = ""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(self._pattern, self._convert(second))
        return self._text + self._millis[int((created - second) * 1000)]


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S", utc=True, separator=".", suffix="Z")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._clock.stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode()
        return self._redactor.redact(line)


class TextFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if v is not None)
        return self._redactor.redact(f"{line} {extra}" if extra else line)


class AccessWriter:
    """Writes access lines straight to the log handler's stream, in the handler's format.

    Building a LogRecord and walking the logging machinery cost more than everything else the
    gateway does for a request except the upstream call (docs/performance.md); the line is the
    same one the formatter would write, through the same redactor.
    """

    def __init__(self, handler: logging.StreamHandler[Any], fmt: str, redactor: Redactor) -> None:
        self._handler = handler
        self._json = fmt == "json"
        self._redactor = redactor
        self._clock = (
            _Clock("%Y-%m-%dT%H:%M:%S", utc=True, separator=".", suffix="Z")
            if self._json
            else _Clock("%Y-%m-%d %H:%M:%S", utc=False, separator=",")
        )

    def write(self, fields: dict[str, Any]) -> None:
        now = time.time()
        if self._json and fields:
            # The four leading members never change but the time: joined as text rather than
            # copied into a dict with the fields (none of which has their names) for each line.
            body = orjson.dumps(fields, default=str).decode()
            line = f'{{"ts":"{self._clock.stamp(now)}",{_ACCESS_MEMBERS},{body[1:]}'
        elif self._json:
            line = f'{{"ts":"{self._clock.stamp(now)}",{_ACCESS_MEMBERS}}}'
        else:
            extra = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            line = f"{self._clock.stamp(now)} INFO {ACCESS_LOGGER} request {extra}"
        line = self._redactor.redact(line) + "\n"
        handler = self._handler
        # The handler's own lock, taken directly: `acquire`, `flush` and `release` are three
        # Python calls (and the lock taken twice) around these two writes.
        with handler.lock:  # type: ignore[union-attr]
            stream = handler.stream
            stream.write(line)
            stream.flush()


_access_writer: AccessWriter | None = None


def write_access(fields: dict[str, Any]) -> None:
    """One access line; through plain logging when `configure_logging` was not called."""
    if _access_writer is not None:
        _access_writer.write(fields)
    else:
        logging.getLogger(ACCESS_LOGGER).info("request", extra=fields)


def configure_logging(level: str, fmt: str, redactor: Redactor) -> None:
    # The records carry no thread, process or caller details, so do not compute them: the
    # logging HOWTO's own advice for code that logs on every request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    global _access_writer  # noqa: PLW0603 - logging configuration is process-wide by nature
    _access_writer = AccessWriter(handler, fmt, redactor)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The gateway writes its own access line; uvicorn's would repeat it without the details.
    logging.getLogger("uvicorn.access").disabled = True
