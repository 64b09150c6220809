"""A background task that runs a coroutine function every few seconds, as an app `Service`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("lb.control")


class Periodic:
    """Calls `tick()` every `interval` seconds until stopped; a failing tick is logged only."""

    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval = interval
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        running = "running" if self._task is not None else "stopped"
        return f"<Periodic {self.name} every {self.interval:g}s, {running}>"

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._tick()
            except Exception:  # noqa: BLE001 - one bad tick must not end the loop
                logger.exception("%s failed", self.name)
