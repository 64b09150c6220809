"""What `Control` works on (`Host`, the runtime) and the shapes it passes around."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from lb.backend import Backend
from lb.config import BackendConfig, Config
from lb.control.overrides import Live
from lb.redis_client import RedisClients

ConfigSource = Config | Mapping[str, Any] | str | os.PathLike[str]
EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
Data = dict[str, Any]
Change = Callable[[Data, int], bool]  # an edit of the control document (see ControlFile.update)


class Refreshed(Protocol):
    """What control asks of the metrics (`lb.metrics.Metrics`): hand this worker's counts over."""

    def refresh(self) -> None: ...


class Host(Protocol):
    """What control changes (`lb.runtime.Runtime`): the live generation, and making a new one."""

    @property
    def generation(self) -> Live: ...

    @property
    def config(self) -> Config: ...

    @property
    def redis(self) -> RedisClients: ...

    def reload_certificates(self) -> list[str]: ...

    @property
    def metrics(self) -> Refreshed: ...

    async def replace(self, config: Config) -> None: ...

    def add_backend(self, pool: str, config: BackendConfig) -> Backend | None: ...

    def remove_backend(self, pool: str, backend_id: str) -> Backend | None: ...
