"""Round robin: each usable backend in turn, ignoring weights (beyond weight 0 taking none)."""

from __future__ import annotations

from collections.abc import Sequence

from lb.backend import Backend
from lb.strategy.base import PickRequest


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def __repr__(self) -> str:
        return "<RoundRobin>"

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        if not backends:
            return None
        index = self._next % len(backends)
        self._next = index + 1
        return backends[index]
