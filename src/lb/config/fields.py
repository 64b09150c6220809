"""Typed reading of config mappings that records every problem under its key path.

Validation never stops at the first problem: a bad value is recorded in `Problems` and replaced by
the default, so the rest of the config is still checked and `ConfigError` lists everything at once.
Converters are plain functions that raise `Invalid` with the message to show after the key path.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from lb.config.model import Network
from lb.config.units import parse_duration, parse_size
from lb.exceptions import LBError

T = TypeVar("T")
S = TypeVar("S", bound=str)


class ConfigError(LBError):
    """An invalid config; `problems` holds one `key.path: message` line per problem found."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class Invalid(LBError, ValueError):
    """Raised by converters; the message follows the key path in the problem line."""


class Problems:
    """Collects problem lines; one line each, because `lb check` prints one per problem."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.paths: set[str] = set()

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {' '.join(message.splitlines())}")
        self.paths.add(path)

    def __bool__(self) -> bool:
        return bool(self.lines)


def child(path: str, key: object) -> str:
    """`pools` + `web` -> `pools.web`; keys that would garble the line are shown quoted."""
    text = str(key)
    if not text or not text.isprintable() or any(c.isspace() for c in text) or len(text) > 60:
        text = repr(text[:57] + "..." if len(text) > 60 else text)
    return f"{path}.{text}" if path else text


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def describe(value: object) -> str:
    """A value as the operator wrote it in YAML, short enough for one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 30 else text[:27] + "..."
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def suggest(word: object, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when one candidate is close to `word`, else an empty string."""
    if not isinstance(word, str) or word.isdigit():  # "501" -> "504" would be a guess, not a hint
        return ""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_MISSING: Any = object()


class Section:
    """One mapping of the config, read key by key; unknown keys are reported on construction."""

    def __init__(
        self,
        data: Mapping[Any, Any],
        path: str,
        problems: Problems,
        allowed: Collection[str],
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        for key in data:
            if key not in allowed:
                problems.add(child(path, key), f"unknown key{suggest(key, allowed)}")

    def key_path(self, key: str) -> str:
        return child(self.path, key)

    def error(self, key: str, message: str) -> None:
        self.problems.add(self.key_path(key), message)

    def valid(self, *keys: str) -> bool:
        """No problem recorded for these keys, so checks across them compare what was written,
        not defaults standing in for bad values."""
        return not any(self.key_path(key) in self.problems.paths for key in keys)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def read(self, key: str, default: T, convert: Callable[[Any], T]) -> T:
        """The converted value, or `default` when absent or invalid (the problem is recorded)."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except Invalid as exc:
            self.error(key, str(exc))
            return default

    def read_optional(self, key: str, default: T | None, convert: Callable[[Any], T]) -> T | None:
        """Like `read`, but an explicit null means None (for values such as `total: null`)."""
        if self.data.get(key, _MISSING) is None:
            return None
        return self.read(key, default, convert)

    def require(self, key: str, convert: Callable[[Any], T]) -> T | None:
        """The converted value; None, with `required` recorded, when the key is absent."""
        if key not in self.data:
            self.error(key, "required")
            return None
        return self.read(key, None, convert)


def section_or_flag(
    value: Any, path: str, problems: Problems, *, allow_true: bool = True
) -> Mapping[Any, Any] | None:
    """A feature section: a mapping; `true` for all defaults (when allowed); false/null for off."""
    if value is None or value is False:
        return None
    if value is True and allow_true:
        return {}
    if isinstance(value, Mapping):
        return value
    expected = "a mapping, true or false" if allow_true else "a mapping or false"
    problems.add(path, f"expected {expected}, got {describe(value)}")
    return None


# Converters. Each takes the raw YAML value and returns the typed one or raises Invalid.


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise Invalid(f"expected true or false, got {describe(value)}")


def to_int(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        # bool is an int subclass, but `weight: true` is never meant as 1.
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        raise Invalid(f"expected an integer >= {minimum}, got {describe(value)}")

    return convert


def to_number(
    low: float, high: float | None = None, *, low_exclusive: bool = False
) -> Callable[[Any], float]:
    if high is not None:
        expected = f"a number between {low:g} and {high:g}"
    else:
        expected = f"a number {'>' if low_exclusive else '>='} {low:g}"

    def convert(value: Any) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            in_range = (number > low if low_exclusive else number >= low) and (
                number <= high if high is not None else math.isfinite(number)
            )
            if in_range:
                return number
        raise Invalid(f"expected {expected}, got {describe(value)}")

    return convert


def to_duration(*, positive: bool) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and seconds == 0:
            raise Invalid("must be greater than 0")
        return seconds

    return convert


def to_size(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if size < minimum:
            raise Invalid(f"must be at least {minimum} bytes")
        return size

    return convert


def to_str(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, str):
        raise Invalid("must not be empty")
    # YAML turns unquoted `0123` or `yes` into numbers and booleans; say how to keep the text.
    hint = " (quote it in YAML)" if isinstance(value, int | float | bool) else ""
    raise Invalid(f"expected a string, got {describe(value)}{hint}")


def to_choice(choices: Sequence[S], *, lower: bool = False) -> Callable[[Any], S]:
    """One of `choices`; typed as their Literal type, so model fields need no casts."""

    def convert(value: Any) -> S:
        text = value.lower() if lower and isinstance(value, str) else value
        if isinstance(text, str) and text in choices:
            return choices[choices.index(text)]
        listed = ", ".join(choices)
        raise Invalid(f"expected one of {listed}, got {describe(value)}{suggest(text, choices)}")

    return convert


def to_url_path(value: Any) -> str:
    """A path as it goes on the request line: starts with "/", no whitespace."""
    text = to_str(value)
    if not text.startswith("/") or any(c.isspace() or not c.isprintable() for c in text):
        raise Invalid(f"expected a path starting with '/', got {describe(value)}")
    return text


def to_network(value: Any) -> Network:
    """A CIDR or a plain address (a /32 or /128); host bits set is a mistake, not a shorthand."""
    if not isinstance(value, str):
        raise Invalid(f"not an IP network: {describe(value)}")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise Invalid(f"not an IP network: {describe(value)}") from None
    raise Invalid(f"{describe(value)} has host bits set (did you mean '{loose}'?)")


def to_list(
    value: Any, path: str, problems: Problems, convert: Callable[[Any], T]
) -> tuple[T, ...] | None:
    """Each item converted; bad items are reported by index and dropped. None if not a list."""
    if not isinstance(value, list | tuple):
        problems.add(path, f"expected a list, got {describe(value)}")
        return None
    result: list[T] = []
    for index, raw in enumerate(value):
        try:
            result.append(convert(raw))
        except Invalid as exc:
            problems.add(item(path, index), str(exc))
    return tuple(result)


def read_networks(section: Section, key: str, default: tuple[Network, ...]) -> tuple[Network, ...]:
    if not section.has(key):
        return default
    value = section.raw(key)
    if value is None:  # `trusted_proxies:` with nothing after it: none
        return ()
    networks = to_list(value, section.key_path(key), section.problems, to_network)
    return default if networks is None else networks
