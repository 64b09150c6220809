"""The start line: what an operator needs to know a process came up right, logged once.

`lb serve` and lb's gunicorn worker (in the master) know the listeners and log it before any worker
starts, then mark the environment so that the workers do not log it again; an app run any other
way (bare uvicorn, mounted) logs it at its own start-up, without the traffic listeners, which only
its host knows. The warnings that go with it (no admin token) are logged the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from lb.config import Config

logger = logging.getLogger("lb")

ANNOUNCED = "LB_ANNOUNCED"  # set in the environment once the start line is logged


def http_url(host: str, port: int, scheme: str = "http") -> str:
    """`http://host:port`, an IPv6 address in brackets."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def admin_url(config: Config) -> str | None:
    return None if config.admin.listen is None else http_url(*config.admin.listen)


def announce(config: Config, listeners: Sequence[str], *, mark: bool = False) -> None:
    """Log the start line (and the warnings) for `config` served on `listeners`; with `mark`,
    also tell child processes that it is logged."""
    from lb import __version__  # lb's __init__ imports the app, which imports this module

    admin = admin_url(config)
    listening = [*listeners, *([f"{admin} (admin)"] if admin else [])]
    pools = len(config.pools)
    backends = sum(len(p.backends) for p in config.pools.values())
    token = config.admin.token is not None
    fields = {
        "version": __version__,
        "config": config.source,
        "pools": pools,
        "backends": backends,
        "listeners": listening,
        "admin_token": token,
    }
    logger.info(
        "lb %s started: config %s, %d pool(s), %d backend(s), listening on %s, admin API %s",
        __version__,
        config.source or "(not from a file)",
        pools,
        backends,
        ", ".join(listening) or "(the host server's)",
        "asks a token" if token else "asks no token",
        extra={"lb_fields": fields},
    )
    if not token:
        where = admin or f"the traffic port under {config.admin.path_prefix}"
        allow = ", ".join(str(n) for n in config.admin.allow) or "nowhere"
        logger.warning(
            "the admin API asks no token: any client from %s reaching %s can drain backends and "
            "reload the config (requests through a proxy are refused); set admin.token",
            allow,
            where,
        )
    if mark:
        os.environ[ANNOUNCED] = "1"


def announced() -> bool:
    return os.environ.get(ANNOUNCED) == "1"
