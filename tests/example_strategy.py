"""A canary split: `percent` of requests go to the backends whose id starts with `prefix`."""

from __future__ import annotations

import random
from collections.abc import Sequence

from lb.backend import Backend
from lb.strategy import PickRequest


class Canary:
    def __init__(self, percent: float = 5, prefix: str = "canary", seed: int | None = None) -> None:
        if not isinstance(percent, int | float) or not 0 <= percent <= 100:
            raise ValueError(f"percent must be a number from 0 to 100, got {percent!r}")
        self.percent, self.prefix = percent, prefix
        self._random = random.Random(seed)
        self._last: Sequence[Backend] = ()
        self._groups: tuple[list[Backend], list[Backend]] = ([], [])
        self._turn = 0

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        if backends is not self._last:  # the same tuple until the pool changes: split it once
            canary = [b for b in backends if b.id.startswith(self.prefix)]
            stable = [b for b in backends if not b.id.startswith(self.prefix)]
            self._groups, self._last = (canary, stable), backends
        canary, stable = self._groups
        to_canary = canary and (not stable or self._random.random() * 100 < self.percent)
        group = canary if to_canary else stable
        if not group:
            return None
        self._turn += 1
        return group[self._turn % len(group)]
