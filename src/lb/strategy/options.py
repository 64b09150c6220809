"""Checks for strategy options: strategies call these in their constructors.

Each raises ValueError with a one-line message naming the option, which the config loader shows
under `pools.NAME.strategy_options`.
"""

from __future__ import annotations

import math

from lb.config import parse_duration


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {_shown(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


def number(name: str, value: object, *, above: float) -> float:
    """A finite number strictly greater than `above`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {_shown(value)}")
    result = float(value)
    if not math.isfinite(result) or result <= above:
        raise ValueError(f"{name} must be a number greater than {above:g}, got {_shown(value)}")
    return result


def duration(name: str, value: object) -> float:
    """Seconds, from the same forms the config takes (`10`, `250ms`, `5s`, `1m`); above zero."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"{name} must be above zero, got {_shown(value)}")
    return seconds


def seed(value: object) -> int | None:
    """The seed for a strategy's own `random.Random`: None (from the OS) or a whole number."""
    if value is None:
        return None
    return integer("seed", value, -(2**63), 2**63)
