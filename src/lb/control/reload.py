"""Hot reload: what a reload reports (`describe`) and how it fails (`ReloadError`).

The reload itself is `Control.reload`: load and validate the config, build a generation next to the
live one (`lb.generation`, which changes nothing live), then `Runtime.commit` starts the services
the new generation adds, swaps it in one synchronous step (where kept backends take their new
weights, health a pool no longer checks is released, admin overrides are laid over, removed backends
are set draining) and stops what only the old generation used. Requests hold the generation they
started with, so a swap never disturbs them.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from lb.config import Config
from lb.exceptions import LBError


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
    restart = [
        f"server.{f.name}"
        for f in fields(new.server)
        if f.name != "watch_config" and getattr(new.server, f.name) != getattr(old.server, f.name)
    ]
    if new.logging != old.logging:
        restart.append("logging")
    return {
        "summary": new.summary(),
        "pools": pools,
        "pools_added": [n for n in new.pools if n not in old.pools],
        "pools_removed": [n for n in old.pools if n not in new.pools],
        "restart_required": restart,
    }
