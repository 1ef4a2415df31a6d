"""Structured logs: one JSON object per line on stdout (or plain text for people)."""

import json
import logging
import sys
import time

ECHO_LIMIT = 64  # characters of a caller's string (a model name, say) echoed back or logged


def escape_controls(text: str) -> str:
    """Control characters (newlines among them) written as escapes: one record, one line."""
    return "".join(
        repr(char)[1:-1] if not char.isprintable() and char != " " else char for char in text
    )


def shown(value: str, limit: int = ECHO_LIMIT) -> str:
    """A caller's string as it may be echoed: escaped, and cut to `limit` characters."""
    cut = value[:limit]
    suffix = f"... ({len(value)} characters)" if len(value) > limit else ""
    return escape_controls(cut) + suffix


# Attributes every LogRecord has; anything else was passed with `extra=` and is a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={escape_controls(str(v))}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD
        )
        message = escape_controls(record.getMessage())
        line = f"{self.formatTime(record)} {record.levelname:<7} {message} {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


LOGGERS = ("serving", "digits")  # the server's own, and the shared layers' (common/)


class ProcessField(logging.Filter):
    """Names the process in every record, when a server runs several (--workers)."""

    def __init__(self, process: str):
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process
        record.pid = record.process  # LogRecord's own, which the formatters leave out
        return True


def configure_logging(
    log_format: str, level: int = logging.INFO, process: str | None = None
) -> None:
    """Send the server's loggers' records to stdout in the chosen format; with `process`,
    each record says which process wrote it ("supervisor", "worker-0", ...) and its pid."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if process is not None:
        handler.addFilter(ProcessField(process))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
