"""`gunicorn lb.app:app -k lb.worker.UvicornWorker`: uvicorn-worker set up as `lb serve` does.

The worker also makes metrics cover every worker with no other set-up: gunicorn builds each worker
object in its master before forking it, so the first one names (and empties) a shared metrics
directory there, before any worker imports prometheus_client (see `lb.multiprocess`).
`lb.gunicorn_conf` adds the hooks that clean up after dead workers at once.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from gunicorn import glogging  # type: ignore[import-untyped]
from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]

from lb.announce import announce, announced
from lb.config import Config, ConfigError, default_config_path, load_config
from lb.control.shared import ENV_DIR, prepare_control_dir
from lb.logsetup import JsonFormatter, use_level
from lb.multiprocess import ENV_READY, prepare_multiprocess
from lb.server import uvicorn_options
from lb.tls import uvicorn_context


def _worker_kwargs() -> dict[str, Any]:
    options = uvicorn_options(host="", port=0)
    keep = (
        "http",
        "loop",
        "lifespan",
        "server_header",
        "date_header",
        "proxy_headers",
        "access_log",
    )
    return {key: options[key] for key in keep}


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS = _worker_kwargs()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # In gunicorn's master, before the fork: every worker inherits the directory.
        first = ENV_READY not in os.environ
        cleanup = prepare_multiprocess()
        if first:
            atexit.register(cleanup)
        # Likewise the control directory through which admin changes made in one worker reach
        # the others (lb.control.shared).
        if ENV_DIR not in os.environ:
            atexit.register(prepare_control_dir())
        super().__init__(*args, **kwargs)
        if self.cfg.is_ssl:
            # `--certfile/--keyfile [--ca-certs]`: lb's context (TLS 1.2+, the ssl module's
            # ciphers, ALPN http/1.1) in place of uvicorn's. gunicorn renews certificates by
            # replacing its workers on SIGHUP.
            self.config.ssl_context_factory = uvicorn_context
        config = _config()
        if config is not None and config.logging.format == "json":
            use_json(self.log)
        # lb's own messages, and any other logger's, go where gunicorn's error log goes, as
        # uvicorn's do; the level comes from `logging.level` when the app starts.
        for name in ("lb", ""):
            logger = logging.getLogger(name)
            if not logger.handlers:
                logger.handlers = list(self.log.error_log.handlers)
                logger.propagate = False
        if config is not None and not announced():
            # In the master, once: the workers inherit the mark.
            use_level(config.logging.level)
            announce(config, [str(sock) for sock in self.sockets], mark=True)


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger with lb's `logging.format: json` applied from its first line on
    (`logger_class` in `lb.gunicorn_conf`); without it, lines turn JSON once the first worker is
    set up."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        config = _config()
        if config is not None and config.logging.format == "json":
            use_json(self)


def use_json(log: Any) -> None:
    """Give gunicorn's error and access log handlers lb's JSON formatter."""
    for logger in (log.error_log, log.access_log):
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


def _config() -> Config | None:
    """The config the workers will serve; None if it is invalid (each worker then reports it)."""
    try:
        return load_config(default_config_path())
    except (ConfigError, OSError):
        return None
