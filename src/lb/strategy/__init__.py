"""Strategies: how a pool picks a backend for a request.

A strategy is any class with a synchronous `pick(backends, request)`; see `base.Strategy` for the
whole protocol and docs/strategies.md for a worked example. Names in config map to classes through
the import strings in `BUILTINS` (the uvicorn registry shape); anything else is `module:Class`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from lb.strategy.base import PickRequest, Strategy

BUILTINS: Mapping[str, str] = {
    "round_robin": "lb.strategy.basic:RoundRobin",
}

__all__ = ["BUILTINS", "PickRequest", "Strategy", "import_strategy", "create_strategy"]


def import_strategy(name: str) -> type[Any]:
    """Resolve a builtin name or a `package.module:ClassName` import string to a class."""
    target = BUILTINS.get(name, name)
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"unknown strategy {name!r}")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ValueError(f"{target!r} is not a class")
    if not callable(getattr(cls, "pick", None)):
        raise ValueError(f"{target!r} has no pick() method")
    return cls


def create_strategy(name: str, options: Mapping[str, object]) -> Strategy:
    cls = import_strategy(name)
    instance: Strategy = cls(**options)
    return instance
