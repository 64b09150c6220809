"""lb's own log messages (the `lb.*` loggers): level and format from the config's `logging` section.

Embedded in a host app, lb adds no handlers and sets the `lb` logger's level only when the host left
it unset: the host owns its logging. `lb serve` and `lb demo` own the process, so they give uvicorn
a logging config that also sends `lb.*` to stderr, as JSON lines when `logging.format` is json.
The access log is separate (`lb.accesslog`): it goes to stdout or `logging.file`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

from lb.config import LoggingConfig


def use_level(level: str) -> None:
    """Set the `lb` logger's level from the config, unless something else already set it."""
    logger = logging.getLogger("lb")
    if logger.level == logging.NOTSET:
        logger.setLevel(level.upper())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def _utc(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


def log_config(config: LoggingConfig) -> dict[str, Any]:
    """uvicorn's default logging config plus a stderr handler for `lb.*` at the configured level.

    Passed as uvicorn's `log_config`, it is applied in every worker process.
    """
    from uvicorn.config import LOGGING_CONFIG

    out: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    out["formatters"]["lb"] = (
        {"()": JsonFormatter}
        if config.format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    out["handlers"]["lb"] = {
        "formatter": "lb",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    out["loggers"]["lb"] = {
        "handlers": ["lb"],
        "level": config.level.upper(),
        "propagate": False,
    }
    return out
