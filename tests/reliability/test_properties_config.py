"""Properties of the config loader over generated *valid* configs (the unit tests cover arbitrary
and near-valid input): each loads, means what it says, survives a trip through a YAML file, and
a `Config` written back out as a mapping loads to the same `Config`."""

from __future__ import annotations

import dataclasses
import ipaddress
import string
from collections.abc import Mapping
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lb.config import Config, load_config
from lb.config.pools import BUILTIN_STRATEGIES

EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# A duration as an operator writes it, with the seconds it means.
durations = st.one_of(
    st.integers(1, 3600).map(lambda n: (n, float(n))),
    st.integers(1, 3600).map(lambda n: (f"{n}s", float(n))),
    st.integers(1, 60_000).map(lambda n: (f"{n}ms", n / 1000)),
    st.integers(1, 60).map(lambda n: (f"{n}m", n * 60.0)),
)
sizes = st.one_of(
    st.integers(1, 2**30).map(lambda n: (n, n)),
    st.integers(1, 1024).map(lambda n: (f"{n}KiB", n * 1024)),
    st.integers(1, 64).map(lambda n: (f"{n}MiB", n * 1024**2)),
    st.integers(1, 500).map(lambda n: (f"{n}KB", n * 1000)),
)
names = st.text(string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=8)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=3).map(
        ".".join
    ),
)
networks = st.one_of(
    st.builds(
        lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)),
        st.ip_addresses(v=4),
        st.integers(8, 32),
    ),
    st.builds(
        lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)),
        st.ip_addresses(v=6),
        st.integers(16, 128),
    ),
)
hash_keys = st.one_of(
    st.sampled_from(["client_ip", "path"]),
    st.builds(lambda k, n: f"{k}:{n}", st.sampled_from(["header", "cookie", "query"]), names),
)


@st.composite
def backend_lists(draw: Any) -> list[Any]:
    count = draw(st.integers(1, 4))
    ports = draw(st.lists(st.integers(1, 65535), min_size=count, max_size=count, unique=True))
    out: list[Any] = []
    for i, port in enumerate(ports):
        url = f"{draw(st.sampled_from(['http', 'https']))}://{draw(hosts)}:{port}"
        if draw(st.booleans()):
            out.append(url)
        else:
            out.append({"url": url, "weight": draw(st.integers(0, 100)), "id": f"b{i}"})
    return out


@st.composite
def pools(draw: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "backends": draw(backend_lists()),
        "strategy": draw(st.sampled_from(BUILTIN_STRATEGIES)),
        "hash_key": draw(hash_keys),
        "preserve_host": draw(st.booleans()),
    }
    if draw(st.booleans()):
        first, second = draw(durations), draw(durations)
        timeout, interval = sorted((first, second), key=lambda d: d[1])  # timeout <= interval
        pool["health_check"] = {
            "path": "/" + draw(names),
            "interval": interval[0],
            "timeout": timeout[0],
            "healthy_threshold": draw(st.integers(1, 10)),
            "unhealthy_threshold": draw(st.integers(1, 10)),
            "expected_status": draw(st.sampled_from(["200-399", "200", "200,204", "200-299,304"])),
        }
    if draw(st.booleans()):
        pool["passive_health"] = {
            "max_failures": draw(st.integers(1, 10)),
            "ejection_time": draw(durations)[0],
            "max_ejection_percent": draw(st.integers(0, 100)),
        }
    if draw(st.booleans()):
        pool["retries"] = {
            "attempts": draw(st.integers(1, 5)),
            "retry_on": draw(
                st.lists(
                    st.sampled_from(["connect_error", "timeout", "500", "502", "503", "504"]),
                    unique=True,
                )
            ),
            "budget_percent": draw(st.integers(0, 100)),
        }
    if draw(st.booleans()):
        pool["timeouts"] = {k: draw(durations)[0] for k in ("connect", "read", "pool")}
    if draw(st.booleans()):
        pool["sticky"] = {"cookie": draw(names), "max_age": draw(durations)[0]}
    return pool


@st.composite
def configs(draw: Any) -> dict[str, Any]:
    pool_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    config: dict[str, Any] = {"pools": {name: draw(pools()) for name in pool_names}}
    if draw(st.booleans()):
        config["routes"] = [
            {
                "pool": draw(st.sampled_from(pool_names)),
                "path_prefix": f"/{draw(names)}/{i}",  # a route shadowed by another is an error
                **({"host": draw(hosts)} if draw(st.booleans()) else {}),
                "strip_prefix": draw(st.booleans()),
            }
            for i in range(draw(st.integers(1, 3)))
        ]
    if draw(st.booleans()):
        config["trusted_proxies"] = draw(st.lists(networks, max_size=3))
    if draw(st.booleans()):
        config["rate_limit"] = {
            "rate": draw(st.floats(0.01, 1e6)),
            "burst": draw(st.integers(1, 10**6)),
            "key": draw(st.sampled_from(["client_ip", "header:x-api-key"])),
            "max_keys": draw(st.integers(1, 10**6)),
            "on_store_error": draw(st.sampled_from(["allow", "deny"])),
        }
    if draw(st.booleans()):
        entry, total = sorted((draw(sizes), draw(sizes)), key=lambda s: s[1])
        config["cache"] = {
            "max_entries": draw(st.integers(1, 10**6)),
            "max_bytes": total[0],
            "max_entry_bytes": entry[0],
            "default_ttl": draw(durations)[0],
        }
    if draw(st.booleans()):
        config["admin"] = {"path_prefix": "/_" + draw(names), "allow": draw(st.lists(networks))}
    if draw(st.booleans()):
        config["server"] = {
            "graceful_timeout": draw(durations)[0],
            "header_timeout": draw(durations)[0],
            "max_header_bytes": draw(sizes)[0],
        }
    return config


@EXAMPLES
@given(configs())
def test_valid_configs_load_and_mean_what_they_say(data: dict[str, Any]) -> None:
    config = load_config(data)
    assert list(config.pools) == list(data["pools"])
    for name, pool in data["pools"].items():
        loaded = config.pools[name]
        assert loaded.strategy == pool["strategy"]
        assert len(loaded.backends) == len(pool["backends"])
        for given_backend, backend in zip(pool["backends"], loaded.backends, strict=True):
            url = given_backend if isinstance(given_backend, str) else given_backend["url"]
            assert backend.url == url.lower()
            if isinstance(given_backend, dict):
                assert (backend.id, backend.weight) == (
                    given_backend["id"],
                    given_backend["weight"],
                )
    assert len(config.routes) == len(data.get("routes", []))
    assert (config.rate_limit is None) == ("rate_limit" not in data)
    assert (config.cache is None) == ("cache" not in data)


@EXAMPLES
@given(configs(), durations, sizes)
def test_durations_and_sizes_mean_seconds_and_bytes(
    data: dict[str, Any], duration: tuple[Any, float], size: tuple[Any, int]
) -> None:
    data = {**data, "server": {"graceful_timeout": duration[0], "max_header_bytes": size[0]}}
    server = load_config(data).server
    assert abs(server.graceful_timeout - duration[1]) < 1e-9
    assert server.max_header_bytes == size[1]


@EXAMPLES
@given(configs())
def test_a_trip_through_a_yaml_file_changes_nothing(
    tmp_path_factory: Any, data: dict[str, Any]
) -> None:  # noqa: E501
    path = tmp_path_factory.mktemp("cfg") / "lb.yaml"
    path.write_text(yaml.safe_dump(data))
    assert dataclasses.replace(load_config(str(path)), source=None) == load_config(data)


@EXAMPLES
@given(configs())
def test_a_loaded_config_written_back_loads_to_itself(data: dict[str, Any]) -> None:
    config = load_config(data)
    assert load_config(to_mapping(config)) == config


def to_mapping(config: Config) -> dict[str, Any]:
    """A `Config` back as the YAML mapping an operator would write for it."""
    out = _plain(config)
    out.pop("source", None)
    for pool in out["pools"].values():
        pool.pop("name")
        for backend in pool["backends"]:
            backend.pop("origin")  # "config": where it came from, not a key of the file
        for target in pool.pop("discover", []):  # discovered names are backend entries
            if target["kind"] == "dns":
                url = f"{target['scheme']}://{target['name']}:{target['port']}"
                entry = {"url": url, "discover": "dns"}
            else:
                entry = {"srv": target["name"], "discover": "srv", "scheme": target["scheme"]}
            pool["backends"].append({**entry, "weight": target["weight"]})
    for route in out.get("routes", []):
        if route.get("rate_limit") is None:
            route.pop("rate_limit", None)
        for key in ("methods", "headers", "cookies"):  # empty: match any (the default)
            if not route.get(key):
                route.pop(key, None)
    return out  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if "expected_status" in fields:
            fields["expected_status"] = ",".join(
                f"{low}-{high}"
                for low, high in value.expected_status  # type: ignore[attr-defined]
            )
        return {k: v for k, v in fields.items() if v is not None}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value
