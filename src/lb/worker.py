"""`gunicorn lb.app:app -k lb.worker.UvicornWorker`: uvicorn-worker set up like `lb serve`."""

from __future__ import annotations

import atexit
import os
from typing import Any

from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]

from lb.control.shared import ENV_DIR, prepare_control_dir
from lb.server import uvicorn_options


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
        # Runs in gunicorn's master, before the fork: every worker inherits the control directory
        # through which admin changes made in one worker reach the others (lb.control.shared).
        if ENV_DIR not in os.environ:
            atexit.register(prepare_control_dir())
        super().__init__(*args, **kwargs)
