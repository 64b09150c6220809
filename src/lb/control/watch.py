"""`server.watch_config`: reload when the config file changes, once it has settled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from lb.config import Config
from lb.instance import Signature, file_signature


class ConfigWatch:
    """The tick of the config watch: `config()` is the live config, `reload()` runs a reload."""

    def __init__(self, config: Callable[[], Config], reload: Callable[[], Awaitable[None]]) -> None:
        self._config = config
        self._reload = reload
        source = config().source
        self._watched = file_signature(source) if source is not None else None
        self._settling: Signature | None = None

    def __repr__(self) -> str:
        return f"<ConfigWatch {self._config().source}>"

    async def tick(self) -> None:
        config = self._config()
        if not config.server.watch_config or config.source is None:
            self._watched = None
            return
        signature = file_signature(config.source)
        if self._watched is None:
            self._watched = signature
            return
        if signature == self._watched:
            self._settling = None
            return
        if signature != self._settling:
            # Changed since the last look: wait one more interval, so a file still being written
            # (an editor saving in steps) is read once it has settled.
            self._settling = signature
            return
        self._watched, self._settling = signature, None
        await self._reload()
