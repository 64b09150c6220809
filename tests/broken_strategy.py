"""A strategy plug-in that fails on every pick: an exception inside the app, for log tests."""

from __future__ import annotations

from collections.abc import Sequence

from lb.backend import Backend
from lb.strategy import PickRequest


class Exploding:
    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        raise RuntimeError("a strategy plug-in failed")
