"""Logging: text or JSON lines on stderr, a request id on every record, model lifecycle events.

:func:`configure_logging` is called once by the CLI (never at import). The request id lives in a
:class:`contextvars.ContextVar` that the REST middleware sets for the task of each request (every
request runs in its own task), so any record logged while serving it carries ``request_id``.
Work handed to thread pools does not inherit it. :class:`ModelEvents` turns the manager's
load/unload hooks into structured records (``event``, ``model``, ``version``, ``seconds``,
``error``).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import secrets
import sys
import time
from typing import Any

from corolla.errors import CorollaError

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("corolla_request_id", default="")

# LogRecord attributes that are not user-supplied ``extra`` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    "color_message",
}


_VALID_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


class RequestIds:
    """Request ids: the client's (``X-Request-ID``) when sane, else ``<random>-<counter>``."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4) + "-"
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def accept(self, value: str | bytes | None) -> str:
        if value:
            if isinstance(value, bytes):
                try:
                    value = value.decode("ascii")
                except UnicodeDecodeError:
                    return self.new()
            if _VALID_ID.match(value):
                return value
        return self.new()


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", "")
        if rid:
            line = f"{line} [request_id={rid}]"
        worker = getattr(record, "worker", "")
        return f"{line} [worker={worker}]" if worker else line


def configure_logging(level: str = "INFO", fmt: str = "text", stream: Any = None) -> None:
    """Replace the root logger's handlers with one stderr handler in ``fmt`` (text | json)."""
    if fmt not in ("text", "json"):
        raise CorollaError(f"--log_format must be text or json, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own loggers propagate to ours; its access log is replaced by corolla.access.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    quiet_client_loggers()


def quiet_client_loggers() -> None:
    """Storage clients' INFO lines speak of themselves ("Found credentials in environment
    variables" on every command), not of Corolla's work: warnings only, unless debugging."""
    debugging = logging.getLogger().level < logging.INFO
    for name in ("boto3", "botocore", "s3transfer", "google", "urllib3"):
        logging.getLogger(name).setLevel(logging.NOTSET if debugging else logging.WARNING)


class _WorkerTag(logging.Filter):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.tag
        return True


def tag_process(tag: str) -> None:
    """Mark every record of this process (a REST worker) with ``worker=<tag>``."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(tag))


class ModelEvents:
    """Manager hooks that log load and unload events as structured records."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("corolla.events")

    def on_load(self, name: str, version: int, seconds: float, err: CorollaError | None) -> None:
        if err is None:
            self.log.info(
                "model %s version %d loaded in %.3fs",
                name,
                version,
                seconds,
                extra={
                    "event": "model_loaded",
                    "model": name,
                    "version": version,
                    "seconds": round(seconds, 6),
                },
            )
        else:
            self.log.warning(
                "model %s version %d failed to load: %s",
                name,
                version,
                err.message,
                extra={
                    "event": "model_load_failed",
                    "model": name,
                    "version": version,
                    "seconds": round(seconds, 6),
                    "error": err.message,
                    "code": err.code.name,
                },
            )

    def on_unload(self, name: str, version: int, seconds: float, err: CorollaError | None) -> None:
        self.log.info(
            "model %s version %d unloaded in %.3fs",
            name,
            version,
            seconds,
            extra={
                "event": "model_unloaded",
                "model": name,
                "version": version,
                "seconds": round(seconds, 6),
            },
        )
