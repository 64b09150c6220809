"""lb's own log messages (the `lb.*` loggers): level and format from the config's `logging` section.

Embedded in a host app, lb adds no handlers and sets the `lb` logger's level only when the host left
it unset: the host owns its logging. `lb serve` and `lb demo` own the process, so they give uvicorn
a logging config that sends `lb.*`, uvicorn's and every other logger's lines to stderr (or
`logging.error_file`), each line one JSON object when `logging.format` is json. The access log is
separate (`lb.accesslog`): it goes to stdout or `logging.file`. SIGUSR1 reopens both files.
Every line carries the pid of the process that wrote it (`[pid 1234]`, JSON `"pid"`), which tells
the workers of `lb serve --workers N` apart (gunicorn's own format has it as `[1234]`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from lb.config import LoggingConfig

logger = logging.getLogger("lb")

TEXT_FORMAT = "%(asctime)s %(levelname)s [pid %(process)d] %(name)s: %(message)s"
# uvicorn's own lines ("Started server process", "Application startup complete") with the pid.
UVICORN_TEXT_FORMAT = "%(levelprefix)s [pid %(process)d] %(message)s"
FIELDS = "lb_fields"  # `extra={FIELDS: {...}}`: fields a JSON line carries besides the message


def use_level(level: str) -> None:
    """Set the `lb` logger's level from the config, unless something else already set it."""
    if logger.level == logging.NOTSET:
        logger.setLevel(level.upper())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, the record's `lb_fields`, and
    the traceback (`exception`) if any, so a multi-line traceback is still one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def _utc(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


class ReopenableFileHandler(logging.FileHandler):
    """`logging.error_file`: reopened by name on SIGUSR1, so that after logrotate renamed it the
    lines go to a new file of the old name."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def reopen_log_files() -> None:
    """Reopen every `ReopenableFileHandler` of this process's loggers."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {
        handler
        for item in loggers
        if isinstance(item, logging.Logger)
        for handler in item.handlers
        if isinstance(handler, ReopenableFileHandler)
    }
    for handler in handlers:
        handler.reopen()


def log_config(config: LoggingConfig) -> dict[str, Any]:
    """uvicorn's default logging config plus a handler for `lb.*` and the root logger at the
    configured level; with json, uvicorn's formatters are lb's JSON one too, and with an
    `error_file`, uvicorn's lines go there as well.

    Passed as uvicorn's `log_config`, it is applied in every worker process.
    """
    from uvicorn.config import LOGGING_CONFIG

    out: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    as_json = config.format == "json"
    out["formatters"]["lb"] = {"()": JsonFormatter} if as_json else {"format": TEXT_FORMAT}
    if as_json:
        out["formatters"]["default"] = {"()": JsonFormatter}
        out["formatters"]["access"] = {"()": JsonFormatter}
    else:
        out["formatters"]["default"]["fmt"] = UVICORN_TEXT_FORMAT
    if config.error_file:
        out["handlers"]["lb"] = {
            "formatter": "lb",
            "class": "lb.logsetup.ReopenableFileHandler",
            "filename": config.error_file,
            "encoding": "utf-8",
        }
    else:
        out["handlers"]["lb"] = {
            "formatter": "lb",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        }
    if as_json or config.error_file:
        # One destination and one format for every line but the access log.
        out["loggers"]["uvicorn"]["handlers"] = ["lb"]
    out["loggers"]["lb"] = {
        "handlers": ["lb"],
        "level": config.level.upper(),
        "propagate": False,
    }
    # Everything else (asyncio's "Task exception was never retrieved", warnings, libraries).
    out["root"] = {"handlers": ["lb"], "level": "WARNING"}
    return out


def capture_uncaught() -> None:
    """Uncaught exceptions (main thread and others) and warnings go through logging, so that
    they are JSON lines too: for processes lb owns (`lb serve`), never for a host app."""
    logging.captureWarnings(True)

    def excepthook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        logger.critical("uncaught exception", exc_info=(kind, value, traceback))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
            name = args.thread.name if args.thread is not None else "?"
            logger.critical("uncaught exception in thread %s", name, exc_info=exc_info)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def on_reopen_signal(reopen: Callable[[], None]) -> Callable[[], None] | None:
    """Make SIGUSR1 (logrotate's convention) call `reopen` (an app's access log) and reopen the
    process's log files, on the running loop. A handler set before (gunicorn's worker reopens its
    own files; `lb serve`'s reopens lb's) is called after `reopen` instead of reopening here.

    Returns the undo, or None when signals are not this thread's to set.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGUSR1)
    loop = asyncio.get_running_loop()

    def handle() -> None:
        try:
            reopen()
            if callable(previous):
                previous(signal.SIGUSR1, None)
            else:
                reopen_log_files()
        except OSError as exc:  # a full disk or a gone directory must not stop lb
            logger.error("SIGUSR1: cannot reopen the log files: %s", exc)
            return
        logger.info("SIGUSR1: log files reopened")

    loop.add_signal_handler(signal.SIGUSR1, handle)
    # A worker of `lb serve --workers N` starts with it blocked (lb.control.supervisor): one sent
    # while it was starting is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGUSR1)
        # Never back to the default action, which ends the process.
        signal.signal(signal.SIGUSR1, previous if callable(previous) else signal.SIG_IGN)

    return undo
