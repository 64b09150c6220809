"""The strategy registry: config names to import strings (uvicorn's registry shape), and the one
import of a strategy class from a name.

A leaf module, read by both the config validator (`lb.config.pools`, which builds a strategy once
to fail early) and the pools (`lb.strategy.create_strategy`): the classes are imported by string,
so neither depends on the other. Names not listed are `package.module:ClassName` plug-ins.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

BUILTINS: Mapping[str, str] = {
    "round_robin": "lb.strategy.basic:RoundRobin",
    "weighted_round_robin": "lb.strategy.weighted:WeightedRoundRobin",
    "least_connections": "lb.strategy.load:LeastConnections",
    "random": "lb.strategy.weighted:Random",
    "power_of_two_choices": "lb.strategy.load:PowerOfTwoChoices",
    "least_latency": "lb.strategy.load:LeastLatency",
    "ip_hash": "lb.strategy.hashing:IpHash",
    "consistent_hash": "lb.strategy.hashing:ConsistentHash",
}


def import_strategy(name: str) -> type[Any]:
    """Resolve a builtin name or a `package.module:ClassName` import string to a class."""
    target = BUILTINS.get(name, name)
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"unknown strategy {name!r}")
    module = importlib.import_module(module_name)
    cls: object = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
    if not isinstance(cls, type):
        raise ValueError(f"{target!r} is not a class")
    if not callable(getattr(cls, "pick", None)):
        raise ValueError(f"{target!r} has no pick() method")
    return cls


def check_options(name: str, options: Mapping[str, object]) -> tuple[str, str] | None:
    """Import strategy `name` and build it once with `options`, as the config loader does to
    fail early. None when all is well, else (the key the problem belongs to, message): the key is
    `strategy`, `strategy_options` or `strategy_options.OPTION`."""
    try:
        cls = import_strategy(name)
    except (ImportError, ValueError) as exc:
        return "strategy", str(exc)
    parameters: list[inspect.Parameter] | None
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):  # no signature to read: let the call decide
        parameters = None
    if parameters is not None and not any(p.kind is p.VAR_KEYWORD for p in parameters):
        names = [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = f"; {name} takes {', '.join(names)}" if names else f"; {name} takes none"
                return f"strategy_options.{key}", f"unknown option{hint}{known}"
    try:
        cls(**options)
    except (ValueError, TypeError) as exc:
        return "strategy_options", str(exc)
    except Exception as exc:  # a plug-in's constructor may fail in any way
        return "strategy_options", f"{name}: {type(exc).__name__}: {exc}"
    return None
