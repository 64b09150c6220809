"""Hot reload: turn a new, fully validated config into the live generation in one swap.

Requests hold the generation they started with, so a swap never disturbs them: in-flight requests
and open WebSockets finish on their old pools and backends. Backends that stay (same pool, id and
URL) are the same objects in the new generation, with their health, counters and strategy state.
Around that, this module makes the new generation safe to serve before it goes live:

- a backend the reload adds to a pool with active health checks starts unhealthy, so it gets
  traffic only once its checks pass; a kept backend whose pool no longer has active checks (or
  passive health) is released from what those said, since nothing would ever bring it back;
- the new generation's services are started before the swap and the old one's stopped after it,
  except those the two share (a kept cache or Redis connection), which simply keep running;
- backends the reload removes are set draining on their old pool, so the requests still finishing
  there do not retry onto them;
- if anything fails before the swap, every change to shared backends is undone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from lb.config import Config

if TYPE_CHECKING:
    from lb.app import LoadBalancer, Service
    from lb.backend import Backend
    from lb.generation import Generation

logger = logging.getLogger("lb.control")


class ReloadError(Exception):
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


def _backends(gen: Generation) -> list[Backend]:
    return [b for pool in gen.pools.values() for b in pool.backends.values()]


class GenerationSwap:
    """A new generation built from `config` next to the live one, not yet serving.

    Building it already touches the backends it keeps (their pool and configured weight), so it
    remembers how they were: `undo()` puts them back if the swap does not go ahead.
    """

    def __init__(self, app: LoadBalancer, config: Config) -> None:
        # Imported here: lb.generation imports the admin app, which imports lb.control.
        from lb.generation import Generation

        self.app = app
        self.old = app.generation
        self._saved = [
            (b, b._on_change, b.config_weight, b.weight, b.healthy, b.ejected_until)
            for b in _backends(self.old)
        ]
        try:
            self.new = Generation(config, app, previous=self.old)
            self._prepare()
        except Exception as exc:
            self.undo()
            raise ReloadError([f"config: cannot build it: {type(exc).__name__}: {exc}"]) from exc

    def _prepare(self) -> None:
        before = {id(b) for b in _backends(self.old)}
        for pool in self.new.pools.values():
            checked = pool.config.health_check is not None
            for backend in pool.backends.values():
                if id(backend) not in before:
                    if checked:
                        backend.set_healthy(False)
                    continue
                if not checked and not backend.healthy:
                    backend.set_healthy(True)
                if pool.config.passive_health is None and backend.ejected:
                    backend.set_ejected_until(0.0)

    def undo(self) -> None:
        for backend, on_change, config_weight, weight, healthy, ejected_until in self._saved:
            backend._on_change = on_change
            backend.config_weight = config_weight
            backend.weight = weight
            backend.healthy = healthy
            backend.ejected_until = ejected_until
        for pool in self.old.pools.values():
            pool.invalidate()

    async def commit(self, on_swap: Callable[[Generation], None]) -> None:
        """Start what the new generation adds, swap it in, then stop what only the old one used.

        `on_swap(new)` runs in the same synchronous step as the swap (re-applying admin
        overrides), so no request sees the new generation without them.
        """
        app, old, new = self.app, self.old, self.new
        old_services: list[Service] = list(app.services)
        new_services: list[Service] = list(new.services())
        started: list[Service] = []
        if app._started:
            try:
                for service in new_services:
                    if not any(service is s for s in old_services):
                        await service.start()
                        started.append(service)
            except Exception as exc:
                for service in reversed(started):
                    try:
                        await service.stop()
                    except Exception:  # noqa: BLE001 - already failing; the first error is reported
                        logger.exception("stopping %r after a failed reload", service)
                self.undo()
                raise ReloadError(
                    [f"config: cannot start {service!r}: {type(exc).__name__}: {exc}"]
                ) from exc
        # The swap: from here on new requests take the new generation.
        app.config = new.config
        app.generation = new
        on_swap(new)
        if app._started:
            app.services = new_services
        kept = {id(b) for b in _backends(new)}
        for backend in _backends(old):
            if id(backend) not in kept:
                backend.set_admin_state("draining")
        if app._started:
            for service in reversed(old_services):
                if not any(service is s for s in new_services):
                    try:
                        await service.stop()
                    except Exception:  # noqa: BLE001 - the new generation is live regardless
                        logger.exception("stopping %r of the previous configuration", service)
