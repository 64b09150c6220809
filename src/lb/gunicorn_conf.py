"""Gunicorn settings for lb: `gunicorn lb.app:app -c python:lb.gunicorn_conf -w 4`.

Uses lb's worker class and logger class (gunicorn's own lines as JSON from the first one with
`logging.format: json`) and adds the multiprocess-metrics hooks: the shared metrics directory is
named and emptied when gunicorn starts, a worker that exits has its live gauges (in-flight requests,
backend up) dropped at once, and a directory gunicorn made is removed when it stops. Import it from
your own gunicorn config to keep these hooks: `from lb.gunicorn_conf import *`.
"""

from __future__ import annotations

from typing import Any

from lb.multiprocess import mark_dead, prepare_multiprocess

worker_class = "lb.worker.UvicornWorker"
logger_class = "lb.worker.GunicornLogger"  # `logging.format: json` from gunicorn's first line


def on_starting(server: Any) -> None:
    # Kept on the arbiter for on_exit: a config module holds no state of its own.
    server.lb_metrics_cleanup = prepare_multiprocess()


def child_exit(server: Any, worker: Any) -> None:
    mark_dead(worker.pid)


def on_exit(server: Any) -> None:
    cleanup = getattr(server, "lb_metrics_cleanup", None)
    if cleanup is not None:
        cleanup()
