"""Validation of `pools.NAME`: backends, strategy, health, retries and timeouts."""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from lb.config.backends import read_backends
from lb.config.fields import (
    Invalid,
    Problems,
    Section,
    child,
    describe,
    item,
    section_or_flag,
    suggest,
    to_bool,
    to_choice,
    to_duration,
    to_int,
    to_number,
    to_str,
    to_url_path,
)
from lb.config.model import (
    RETRY_ON_NAMES,
    HealthCheckConfig,
    PassiveHealthConfig,
    PoolConfig,
    PoolLimitsConfig,
    RetryConfig,
    StickyConfig,
    TimeoutConfig,
)
from lb.config.tls import read_pool_tls
from lb.registry import BUILTINS, check_options

BUILTIN_STRATEGIES = tuple(BUILTINS)  # the names the config accepts: the one registry's

POOL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# RFC 9110 token: header names, and RFC 6265 cookie names.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_POOL_KEYS = (
    "backends",
    "strategy",
    "strategy_options",
    "hash_key",
    "sticky",
    "health_check",
    "passive_health",
    "retries",
    "timeouts",
    "preserve_host",
    "slow_start",
    "panic_threshold",
    "tls",
    "limits",
)
_PERCENT = to_number(0, 100)
_EXAMPLE_NAMES = {"header": "X-User-ID", "cookie": "session", "query": "user"}
_RETRY_ON_ORDER = ("connect_error", "timeout", "500", "502", "503", "504")


def to_strategy(value: Any) -> str:
    """A builtin name, or `package.module:ClassName`, which is imported here to fail early."""
    name = to_str(value)
    if ":" not in name:
        if name in BUILTIN_STRATEGIES:
            return name
        hint = suggest(name, BUILTIN_STRATEGIES)
        if not hint:
            hint = f"; expected one of {', '.join(BUILTIN_STRATEGIES)} or 'package.module:Class'"
        raise Invalid(f"unknown strategy {name!r}{hint}")
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise Invalid(f"expected 'package.module:ClassName', got {name!r}")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise Invalid(f"cannot import {name!r}: {exc}") from None
    except AttributeError:
        raise Invalid(f"cannot import {name!r}: {module_name!r} has no {attribute!r}") from None
    except (Exception, SystemExit) as exc:  # a plug-in module may fail in any way on import
        raise Invalid(f"cannot import {name!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(target, type):
        raise Invalid(f"{name!r} is not a class")
    return name


def to_hash_key(value: Any) -> str:
    """client_ip | path | header:NAME | cookie:NAME | query:NAME. Header names are lower-cased:
    they are case-insensitive, and ASGI hands them over lower-cased."""
    text = to_str(value)
    if text in ("client_ip", "path"):
        return text
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("header", "cookie", "query"):
        raise Invalid(
            "expected client_ip, path, header:NAME, cookie:NAME or query:NAME, "
            f"got {describe(value)}{suggest(text, ('client_ip', 'path'))}"
        )
    if not name:
        raise Invalid(f"'{kind}:' needs a name, e.g. '{kind}:{_EXAMPLE_NAMES[kind]}'")
    valid = TOKEN.fullmatch(name) if kind != "query" else not any(c in name for c in "&=# ")
    if not valid:
        raise Invalid(f"invalid {kind} name {name!r}")
    return f"header:{name.lower()}" if kind == "header" else text


def _to_cookie_name(value: Any) -> str:
    text = to_str(value)
    if not TOKEN.fullmatch(text):
        raise Invalid(f"invalid cookie name {text!r}")
    return text


def _to_method(value: Any) -> str:
    return to_choice(("GET", "HEAD", "OPTIONS"))(value.upper() if isinstance(value, str) else value)


def _status_range(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,3}\s*(-\s*\d{1,3}\s*)?", value):
        first, _, second = value.partition("-")
        low, high = int(first), int(second or first)
    else:
        raise Invalid(
            f"expected a status code, a range like '200-399', or a list of those, "
            f"got {describe(value)}"
        )
    if not (100 <= low <= 599 and 100 <= high <= 599):
        raise Invalid(f"status codes must be between 100 and 599, got {describe(value)}")
    if low > high:
        raise Invalid(f"range {describe(value)} is empty (low end above high end)")
    return low, high


def to_expected_status(value: Any) -> tuple[tuple[int, int], ...]:
    """200 | "200-399" | "200,204,300-399" | a list of those -> inclusive ranges, in order."""
    parts: list[Any] = []
    for entry in value if isinstance(value, list | tuple) else [value]:
        parts.extend(entry.split(",") if isinstance(entry, str) else [entry])
    if not parts:
        raise Invalid("must name at least one status code")
    return tuple(_status_range(part) for part in parts)


def _read_sticky(value: Any, path: str, problems: Problems) -> StickyConfig | None:
    data = section_or_flag(value, path, problems)
    if data is None:
        return None
    s = Section(data, path, problems, ("cookie", "max_age", "secret"))
    default = StickyConfig()
    return StickyConfig(
        cookie=s.read("cookie", default.cookie, _to_cookie_name),
        max_age=s.read("max_age", default.max_age, to_duration(positive=True)),
        # Empty (e.g. an unset `${STICKY_SECRET}`) means no secret, like `admin.token`.
        secret=s.read("secret", None, to_str) if s.raw("secret") not in (None, "") else None,
    )


def _read_health_check(value: Any, path: str, problems: Problems) -> HealthCheckConfig | None:
    data = section_or_flag(value, path, problems)
    if data is None:
        return None
    d = HealthCheckConfig()
    s = Section(data, path, problems, tuple(HealthCheckConfig.__dataclass_fields__))
    positive = to_duration(positive=True)
    config = HealthCheckConfig(
        path=s.read("path", d.path, to_url_path),
        method=s.read("method", d.method, _to_method),
        interval=s.read("interval", d.interval, positive),
        timeout=s.read("timeout", d.timeout, positive),
        healthy_threshold=s.read("healthy_threshold", d.healthy_threshold, to_int(1)),
        unhealthy_threshold=s.read("unhealthy_threshold", d.unhealthy_threshold, to_int(1)),
        expected_status=s.read("expected_status", d.expected_status, to_expected_status),
        host=s.read_optional("host", d.host, to_str),
        jitter=s.read("jitter", d.jitter, to_number(0, 1)),
    )
    # `timeout` may exceed `interval` (as in Envoy and HAProxy): the checker waits `interval`
    # after a check ends before the next starts, so checks of one backend never overlap.
    return config


def _read_passive(value: Any, path: str, problems: Problems) -> PassiveHealthConfig | None:
    data = section_or_flag(value, path, problems)
    if data is None:
        return None
    d = PassiveHealthConfig()
    s = Section(data, path, problems, tuple(PassiveHealthConfig.__dataclass_fields__))
    return PassiveHealthConfig(
        max_failures=s.read("max_failures", d.max_failures, to_int(1)),
        ejection_time=s.read("ejection_time", d.ejection_time, to_duration(positive=True)),
        max_ejection_percent=s.read("max_ejection_percent", d.max_ejection_percent, _PERCENT),
    )


def _to_retry_condition(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str) and text in RETRY_ON_NAMES:
        return text
    raise Invalid(
        f"unknown retry condition {describe(value)}; expected one of "
        f"{', '.join(_RETRY_ON_ORDER)}{suggest(text, _RETRY_ON_ORDER)}"
    )


def _read_retries(value: Any, path: str, problems: Problems) -> RetryConfig:
    d = RetryConfig()
    if value is None:
        return d
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping, got {describe(value)}")
        return d
    s = Section(value, path, problems, tuple(RetryConfig.__dataclass_fields__))
    retry_on = d.retry_on
    if s.has("retry_on"):
        raw = s.raw("retry_on")
        if isinstance(raw, list | tuple):
            names = set()
            for index, entry in enumerate(raw):
                try:
                    names.add(_to_retry_condition(entry))
                except Invalid as exc:
                    problems.add(item(s.key_path("retry_on"), index), str(exc))
            retry_on = frozenset(names)
        else:
            s.error("retry_on", f"expected a list, got {describe(raw)}")
    return RetryConfig(
        attempts=s.read("attempts", d.attempts, to_int(1)),
        retry_on=retry_on,
        budget_percent=s.read("budget_percent", d.budget_percent, _PERCENT),
        per_try_timeout=s.read_optional(
            "per_try_timeout", d.per_try_timeout, to_duration(positive=True)
        ),
    )


def _read_timeouts(value: Any, path: str, problems: Problems) -> TimeoutConfig:
    d = TimeoutConfig()
    if value is None:
        return d
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping, got {describe(value)}")
        return d
    s = Section(value, path, problems, tuple(TimeoutConfig.__dataclass_fields__))
    positive = to_duration(positive=True)
    return TimeoutConfig(
        connect=s.read("connect", d.connect, positive),
        read=s.read("read", d.read, positive),
        pool=s.read("pool", d.pool, positive),
        total=s.read_optional("total", d.total, positive),
        idle=s.read("idle", d.idle, positive),
    )


def _read_limits(value: Any, path: str, problems: Problems) -> PoolLimitsConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping, got {describe(value)}")
        return None
    s = Section(value, path, problems, tuple(PoolLimitsConfig.__dataclass_fields__))
    return PoolLimitsConfig(
        max_connections=s.read_optional("max_connections", None, to_int(1)),
        max_pending=s.read_optional("max_pending", None, to_int(0)),
        max_requests_per_connection=s.read_optional("max_requests_per_connection", None, to_int(1)),
    )


def _to_panic_threshold(value: Any) -> float | None:
    """A percentage, or false to turn panic mode off."""
    if value is False:
        return None
    try:
        return _PERCENT(value)
    except Invalid:
        raise Invalid(
            f"expected a number between 0 and 100 or false, got {describe(value)}"
        ) from None


def _to_options(value: Any) -> dict[str, object]:
    if value is None:
        return {}
    # Strategies take these as keyword arguments, so keys must be strings.
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return dict(value)
    raise Invalid(f"expected a mapping of option names to values, got {describe(value)}")


def read_pool(name: str, value: Any, path: str, problems: Problems) -> PoolConfig | None:
    """The pool at `path`, or None when it is not even a mapping (the problem is recorded)."""
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping with 'backends', got {describe(value)}")
        return None
    s = Section(value, path, problems, _POOL_KEYS)
    d = PoolConfig(name=name, backends=())
    backends, discover = read_backends(s, problems)
    strategy = s.read("strategy", d.strategy, to_strategy)
    strategy_options: dict[str, object] = s.read("strategy_options", {}, _to_options)
    if s.valid("strategy", "strategy_options"):
        # Build the strategy once so that a bad option fails `lb check`, not the first start.
        problem = check_options(strategy, strategy_options)
        if problem is not None:
            s.error(*problem)
    return PoolConfig(
        name=name,
        backends=backends,
        strategy=strategy,
        strategy_options=strategy_options,
        hash_key=s.read("hash_key", d.hash_key, to_hash_key),
        sticky=_read_sticky(s.raw("sticky"), s.key_path("sticky"), problems),
        health_check=_read_health_check(
            s.raw("health_check"), s.key_path("health_check"), problems
        ),
        passive_health=_read_passive(
            s.raw("passive_health"), s.key_path("passive_health"), problems
        ),
        retries=_read_retries(s.raw("retries"), s.key_path("retries"), problems),
        timeouts=_read_timeouts(s.raw("timeouts"), s.key_path("timeouts"), problems),
        preserve_host=s.read("preserve_host", d.preserve_host, to_bool),
        slow_start=s.read("slow_start", d.slow_start, to_duration(positive=False)),
        panic_threshold=s.read("panic_threshold", d.panic_threshold, _to_panic_threshold),
        tls=read_pool_tls(s.raw("tls"), s.key_path("tls"), problems),
        limits=_read_limits(s.raw("limits"), s.key_path("limits"), problems),
        discover=discover,
    )


def read_pools(value: Any, problems: Problems) -> dict[str, PoolConfig]:
    if not isinstance(value, Mapping):
        problems.add("pools", f"expected a mapping of pool names to pools, got {describe(value)}")
        return {}
    if not value:
        problems.add("pools", "at least one pool is required")
    pools: dict[str, PoolConfig] = {}
    for name, raw in value.items():
        path = child("pools", name)
        if not isinstance(name, str) or not POOL_NAME.fullmatch(name):
            problems.add(path, "invalid pool name: use letters, digits, '_', '.' and '-'")
            continue
        pool = read_pool(name, raw, path, problems)
        if pool is not None:
            pools[name] = pool
    return pools
