"""Durations and sizes as operators write them (`250ms`, `1.5s`, `64KiB`), as seconds and bytes."""

from __future__ import annotations

import math
import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|h)?")
_DURATION_HINT = "expected seconds or a number with unit ms, s, m or h (e.g. '250ms', '5s', '1m')"

# Decimal units are powers of 1000 and binary ones powers of 1024, as in IEC 80000-13; operators
# who write "MB" meaning 2**20 get 4.6% less, which is the safe direction for a memory bound.
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[A-Za-z]+)?")
_SIZE_HINT = "expected bytes or a number with unit B, KB, KiB, MB, MiB, GB or GiB (e.g. '64KiB')"


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string such as `250ms`, `5s`, `1.5m`, `1h`, `30`.

    Raises ValueError with a one-line message for anything else, and for negative values.
    """
    if isinstance(value, bool):  # bool is an int subclass; `timeout: yes` is a mistake
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"duration {value!r} is too large") from None
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"duration {_short(value)} must not be negative")
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"invalid duration {_short(value)}: {_DURATION_HINT}")
        seconds = float(match["number"]) * _DURATION_UNITS[match["unit"] or "s"]
    else:
        raise ValueError(f"invalid duration of type {type(value).__name__}: {_DURATION_HINT}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"duration {value!r} is not a finite number")
    if seconds < 0:
        raise ValueError(f"duration {value!r} must not be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as `512B`, `64KiB`, `10MB`, `1.5GiB`, `4096`.

    Units are case-insensitive; fractions are allowed with a unit and rounded down to whole bytes.
    Raises ValueError with a one-line message for anything else, and for negative values.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value!r} must not be negative")
        return value
    if isinstance(value, float):
        # A float in YAML is almost always `1.5` meant as something with a unit; say so.
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    if not isinstance(value, str):
        raise ValueError(f"invalid size of type {type(value).__name__}: {_SIZE_HINT}")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"size {_short(value)} must not be negative")
    match = _SIZE_RE.fullmatch(text)
    unit = (match["unit"] or "b").lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {_short(value)}: {_SIZE_HINT}")
    number = match["number"]
    if "." in number and unit == "b":
        raise ValueError(f"invalid size {_short(value)}: bytes must be a whole number")
    # Integer arithmetic where possible so that "3GiB" is exact and huge values do not overflow.
    if "." not in number:
        return int(number) * _SIZE_UNITS[unit]
    scaled = float(number) * _SIZE_UNITS[unit]
    if math.isinf(scaled):
        raise ValueError(f"size {_short(value)} is too large")
    return int(scaled)
