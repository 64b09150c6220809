"""Strategies: how a pool picks a backend for a request.

A strategy is any class with a synchronous `pick(backends, request)`; see `base.Strategy` for the
whole protocol and docs/strategies.md for a worked example. Names in config map to classes through
the import strings of `lb.registry.BUILTINS` (the uvicorn registry shape); anything else is
`module:Class`.
"""

from __future__ import annotations

from collections.abc import Mapping

from lb.registry import BUILTINS, check_options, import_strategy
from lb.strategy.base import PickRequest, Strategy

__all__ = [
    "BUILTINS",
    "check_options",
    "PickRequest",
    "Strategy",
    "create_strategy",
    "import_strategy",
]


def create_strategy(name: str, options: Mapping[str, object]) -> Strategy:
    cls = import_strategy(name)
    instance: Strategy = cls(**options)
    return instance
