"""One logging configuration for ``prunescope serve`` and ``prunescope worker``.

Human-readable lines by default; one JSON object a line with ``PRUNESCOPE_LOG_FORMAT=json``, for log
search. A runner wraps a shard's work in :func:`job_context`, so every record logged meanwhile from that
thread (the runner's, the library's, SQLAlchemy's) carries the job id, shard and worker, in both formats.
The context is a ``contextvars`` variable: threads of the embedded executor each keep their own.
Standard library only, so the worker imports it as freely as the API.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import IO, Any

#: The fields a job's records carry (set by :func:`job_context`).
JOB_FIELDS = ("job_id", "shard", "worker")
FORMATS = ("text", "json")
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("prunescope_log_context", default={})  # noqa: B039 - never mutated


@contextlib.contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    """Within the block, every record from this thread (or task) carries ``fields`` (job_id, shard, worker)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the job context onto each record (``record.job_id`` ...), so any formatter may show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        record.prunescope = context
        for key, value in context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC ISO), level, logger, thread, message, the job context, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "thread": record.threadName,
            "message": record.getMessage(),
            **getattr(record, "prunescope", {}),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [job 3 shard 0 worker w]: message`` (the bracket only inside a job)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "prunescope", {})
        record.job = (" [" + " ".join(f"{k.removesuffix('_id')} {context[k]}" for k in JOB_FIELDS if k in context)
                      + "]") if context else ""
        return super().format(record)


class _Handler(logging.StreamHandler):
    """Marks the handler this module installed, so configuring twice replaces it instead of doubling lines."""


def configure_logging(fmt: str = "text", level: str | int = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Install one handler on the root logger (replacing a previous one of ours) in ``fmt``: text or json."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    logging.captureWarnings(True)  # warnings.warn from the library become records, in the same format
    return handler


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own loggers sent to the root handler (so its lines share the format), not its defaults."""
    return {"version": 1, "disable_existing_loggers": False,
            "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error",
                                                                               "uvicorn.access")}}
