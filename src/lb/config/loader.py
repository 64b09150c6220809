"""Turn a YAML file or a parsed mapping into a validated `Config`, or raise `ConfigError`.

This is the only entry point: it reads the file, expands `${NAME}`, and hands each section to its
validator (`pools`, `routes`, `sections`). Every problem is collected before anything is raised.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import yaml

from lb.config.env import expand_env
from lb.config.fields import ConfigError, Problems, Section, describe, read_networks
from lb.config.model import Config
from lb.config.pools import read_pools
from lb.config.routes import read_rate_limit, read_routes
from lb.config.sections import (
    read_admin,
    read_cache,
    read_discovery,
    read_logging,
    read_metrics,
    read_server,
)
from lb.config.tls import check_shared_origins

_TOP_LEVEL_KEYS = (
    "pools",
    "routes",
    "trusted_proxies",
    "rate_limit",
    "cache",
    "admin",
    "metrics",
    "logging",
    "server",
    "discovery",
)


def default_config_path() -> str:
    """`$LB_CONFIG` when set and non-empty, else `./config.yaml`."""
    return os.environ.get("LB_CONFIG") or "./config.yaml"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML loading silently collapses
    (the last one wins), so a second `web:` pool would quietly replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is None:
            raise ConfigError(f"config: invalid YAML: {problem}") from None
        raise ConfigError(
            f"config: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        ) from None
    except yaml.YAMLError as exc:  # e.g. a character YAML does not allow
        raise ConfigError(f"config: invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError("config: invalid YAML: nested too deeply") from None


def _read_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config: cannot read {path}: not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ConfigError(f"config: cannot read {path!r}: {exc}") from None
    data = _parse_yaml(text)
    if data is None:
        raise ConfigError("config: empty file, expected a mapping with 'pools'")
    return data


def _build(data: Any, source: str | None, environ: Mapping[str, str]) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping, got {describe(data)}")
    problems = Problems()
    data = expand_env(data, environ, problems)
    top = Section(data, "", problems, _TOP_LEVEL_KEYS)
    if not top.has("pools"):
        problems.add("pools", "required")
    pools = read_pools(top.raw("pools"), problems) if top.has("pools") else {}
    check_shared_origins(pools, problems)
    trusted = read_networks(top, "trusted_proxies", ())

    raw_limit = top.raw("rate_limit")
    limit_given = raw_limit is not None and raw_limit is not False  # identity: 0 == False
    rate_limit = None
    if limit_given:
        if isinstance(raw_limit, Mapping):
            rate_limit = read_rate_limit(raw_limit, "rate_limit", problems, environ)
        else:
            problems.add("rate_limit", f"expected a mapping or false, got {describe(raw_limit)}")
    # Given but invalid: its problems are reported once, not again for every route using it.
    limit_broken = limit_given and rate_limit is None

    # Routes are checked against every pool name given, even pools with problems of their own, so
    # one bad backend does not also make each route to its pool "unknown".
    raw_pools = top.raw("pools")
    pool_names = (
        [n for n in raw_pools if isinstance(n, str)] if isinstance(raw_pools, Mapping) else []
    )
    routes = read_routes(top.raw("routes"), problems, pool_names, rate_limit, limit_broken, environ)
    config = Config(
        pools=pools,
        routes=routes,
        trusted_proxies=trusted,
        rate_limit=rate_limit,
        cache=read_cache(top.raw("cache"), problems, environ),
        admin=read_admin(top.raw("admin"), problems),
        metrics=read_metrics(top.raw("metrics"), problems),
        logging=read_logging(top.raw("logging"), problems),
        server=read_server(top.raw("server"), problems),
        discovery=read_discovery(top.raw("discovery"), problems),
        source=source,
    )
    if problems:
        raise ConfigError(problems.lines)
    return config


def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | Config) -> Config:
    """A validated `Config` from a YAML file path, a parsed mapping, or a `Config` (returned as is).

    Raises `ConfigError` listing every problem found, one `key.path: message` line each.
    """
    if isinstance(source, Config):
        return source
    environ = os.environ  # read at call time: tests and reloads see the current environment
    if isinstance(source, Mapping):
        path = None
        data: Any = source
    elif isinstance(source, str | os.PathLike):
        path = os.path.abspath(os.fspath(source))
        data = _read_file(os.fspath(source))
    else:
        raise TypeError(f"load_config() takes a path, a mapping or a Config, not {type(source)}")
    try:
        return _build(data, path, environ)
    except ConfigError:
        raise
    except Exception as exc:
        # A validator bug must still come out as one line, never a traceback at `lb check`.
        raise ConfigError(
            f"config: internal error while validating: {type(exc).__name__}: {exc}"
        ) from exc
