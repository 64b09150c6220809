"""Hot reload: what a reload reports (`describe`) and how it fails (`ReloadError`).

The reload itself is `Control.reload`: load and validate the config, build a generation next to the
live one (`lb.generation`, which changes nothing live), then `Runtime.commit` starts the services
the new generation adds, swaps it in one synchronous step (where kept backends take their new
weights, health a pool no longer checks is released, admin overrides are laid over, removed backends
are set draining) and stops what only the old generation used. Requests hold the generation they
started with, so a swap never disturbs them.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from lb.config import Config
from lb.exceptions import LBError

logger = logging.getLogger("lb.control")


class ReloadError(LBError):
    """A reload that did not happen; `problems` say why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def describe(old: Config, new: Config) -> dict[str, Any]:
    """What a reload from `old` to `new` changes, for the reload answer and the log."""
    pools: dict[str, Any] = {}
    for name, pool in new.pools.items():
        before = {b.id: b.url for b in old.pools[name].backends} if name in old.pools else {}
        after = {b.id: b.url for b in pool.backends}
        pools[name] = {
            "added": [i for i, url in after.items() if before.get(i) != url],
            "removed": [i for i, url in before.items() if after.get(i) != url],
            "kept": [i for i, url in after.items() if before.get(i) == url],
        }
    # Read per generation, so a reload applies them; the rest is read once, at start.
    live = ("watch_config", "max_body_bytes")
    restart = [
        f"server.{f.name}"
        for f in fields(new.server)
        if f.name not in live and getattr(new.server, f.name) != getattr(old.server, f.name)
    ]
    if new.admin.listen != old.admin.listen:
        restart.append("admin.listen")
    if new.logging != old.logging:
        restart.append("logging")
    return {
        "summary": new.summary(),
        "pools": pools,
        "pools_added": [n for n in new.pools if n not in old.pools],
        "pools_removed": [n for n in old.pools if n not in new.pools],
        "restart_required": restart,
    }


def log_reload(trigger: str, report: dict[str, Any]) -> None:
    """The log lines of a reload that happened (SIGHUP, POST reload, the file watch, a peer)."""
    if report["status"] == "unchanged":
        logger.info("config reload (%s): no change", trigger)
        return
    logger.info("config reloaded (%s): %s", trigger, report["summary"])
    if report["restart_required"]:
        logger.warning(
            "config reload (%s): these changes take effect at the next restart: %s",
            trigger,
            ", ".join(report["restart_required"]),
        )


def log_reload_failure(trigger: str, problems: list[str]) -> None:
    logger.error(
        "config reload (%s) failed, the running config is unchanged:\n  %s",
        trigger,
        "\n  ".join(problems),
    )


def log_purge(trigger: str, path: str | None, removed: int | None) -> None:
    """The log line of a cache purge, as a reload's: what, who asked, how much went."""
    what = f"path {path}" if path is not None else "everything"
    count = "" if removed is None else f", {removed} entr{'y' if removed == 1 else 'ies'} removed"
    logger.info("cache purged (%s): %s%s", trigger, what, count)
