"""Start lb for the shared benchmark harness (its custom-target contract).

Reads LB_HOST, LB_PORT, LB_BACKENDS and LB_WORKERS, and the target options the harness passes as
LB_OPT_*:

* LB_OPT_PROFILE — `proxy` (default): round robin, nothing else; `full`: every feature on:
  least_latency, active and passive health checks, a rate limit that never triggers, the cache,
  metrics (always on) and a JSON access log written to a file.
* LB_OPT_FEATURES — with `full`: only these features, joined by `+` (default: all of
  latency+health+ratelimit+cache+log), to see what each costs.
* LB_OPT_CACHED — with `full`: the share of requests that are cacheable (default 0.5: half).
* LB_OPT_TRANSPORT — `lb` (default); `httpx`: httpx's own transport; `aiohttp`: the
  httpx-aiohttp transport (one worker only; the transport comparison in docs/transport.md).
* LB_OPT_SERVER — `uvicorn` (default: `lb serve`, lb's own HTTP/1.1 protocol); `granian`:
  granian (the `bench` extra) serving `lb.app:app` over its own HTTP protocol, proxy only, the
  alternative server issue 19 asked to measure (docs/performance.md).

Why a mix needs help: wrk asks for one path all run long, and the harness's nginx backends answer
every path alike. So under `full`, `mixed_app` (a shim in front of lb, in this file, not in the
product) sends a share LB_OPT_CACHED of the requests to `<path>?cached`, which the cache stores
(cache.default_ttl gives the backends' answers a lifetime) and then answers itself, and sends the
others with `Cache-Control: no-store`, which the cache never stores: every one of those goes
through the whole cache layer (lookup, miss, the response judged and passed on) to the backend.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


FEATURES = ("latency", "health", "ratelimit", "cache", "log")


def build_config(
    backends: list[str], profile: str, workdir: str, features: tuple[str, ...] = FEATURES
) -> dict[str, object]:
    pool: dict[str, object] = {"backends": backends, "strategy": "round_robin"}
    config: dict[str, object] = {"pools": {"web": pool}, "logging": {"access_log": False}}
    if profile != "full":
        return config
    if "latency" in features:
        pool["strategy"] = "least_latency"
    if "health" in features:
        pool["health_check"] = {"path": "/", "interval": "2s", "timeout": "1s"}
        pool["passive_health"] = {"max_failures": 5, "ejection_time": "10s"}
    if "ratelimit" in features:
        config["rate_limit"] = {"rate": 1_000_000, "burst": 1_000_000, "key": "client_ip"}
    if "cache" in features:
        config["cache"] = {"store": "memory", "max_entries": 10_000, "default_ttl": "60s"}
    if "log" in features:
        config["logging"] = {"access_log": True, "file": os.path.join(workdir, "access.log")}
    return config


class Mix:
    """Bench-only: makes a share of the requests cacheable and the rest uncacheable (see above)."""

    def __init__(self, app: Any, cached_share: float) -> None:
        self.app = app
        self.every = round(1 / cached_share) if cached_share > 0 else 0
        self.count = 0

    def lb_limits(self) -> tuple[int, int, float]:
        return self.app.lb_limits()  # type: ignore[no-any-return]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.count += 1
            if self.every and self.count % self.every == 0:
                scope["query_string"] = b"cached"
            else:
                scope["headers"] = [*scope["headers"], (b"cache-control", b"no-store")]
        # lb's app itself once loaded, as lb's protocol does: LazyApp is one layer more.
        await (self.app.loaded() or self.app)(scope, receive, send)


def mixed_app() -> Mix:
    """`uvicorn --factory lb_target:mixed_app`: lb's app (config from $LB_CONFIG) behind Mix."""
    from lb.app import LazyApp

    return Mix(LazyApp(), float(os.environ.get("LB_OPT_CACHED", "0.5")))


def main() -> None:
    backends = os.environ["LB_BACKENDS"].split(",")
    profile = os.environ.get("LB_OPT_PROFILE", "proxy")
    workdir = tempfile.mkdtemp(prefix="lb-bench-")
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        features = os.environ.get("LB_OPT_FEATURES")
        chosen = tuple(features.split("+")) if features else FEATURES
        unknown = sorted(set(chosen) - set(FEATURES))
        if unknown:
            raise SystemExit(f"LB_OPT_FEATURES: unknown {unknown}; known: {'+'.join(FEATURES)}")
        yaml.safe_dump(build_config(backends, profile, workdir, chosen), f)
    transport = os.environ.get("LB_OPT_TRANSPORT", "lb")
    if transport != "lb":
        return serve_with_transport(transport, path)
    if os.environ.get("LB_OPT_SERVER", "uvicorn") == "granian":
        return serve_with_granian(path)
    if profile == "full" and "cache" in chosen:
        return serve_mixed(path)
    args = [sys.executable, "-m", "lb", "serve", "-c", path, "--host", os.environ["LB_HOST"]]
    args += ["--port", os.environ["LB_PORT"], "--workers", os.environ.get("LB_WORKERS", "1")]
    os.execv(sys.executable, args)


def serve_mixed(path: str) -> None:
    """What `lb serve` does (lb.cli.cmd_serve), with `mixed_app` as the app."""
    from lb.config import load_config
    from lb.control.supervisor import serve
    from lb.logsetup import log_config
    from lb.multiprocess import prepare_multiprocess
    from lb.server import uvicorn_options

    config = load_config(path)
    os.environ["LB_CONFIG"] = path
    # Workers import the app by name: they need this folder on their path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, HERE)
    options = uvicorn_options(
        host=os.environ["LB_HOST"],
        port=int(os.environ["LB_PORT"]),
        workers=int(os.environ.get("LB_WORKERS", "1")),
        log_level=config.logging.level,
    )
    options["log_config"] = log_config(config.logging)
    cleanup = prepare_multiprocess() if options["workers"] else (lambda: None)
    try:
        serve("lb_target:mixed_app", path, factory=True, **options)
    finally:
        cleanup()


def serve_with_granian(path: str) -> None:
    os.environ["LB_CONFIG"] = path
    granian = os.path.join(os.path.dirname(sys.executable), "granian")
    args = [granian, "--interface", "asgi", "--host", os.environ["LB_HOST"]]
    args += ["--port", os.environ["LB_PORT"], "--workers", os.environ.get("LB_WORKERS", "1")]
    args += ["--loop", "uvloop", "--no-ws", "--log-level", "warning", "lb.app:app"]
    os.execv(granian, args)


def serve_with_transport(name: str, path: str) -> None:
    """One worker in this process, `lb.runtime.Transport` replaced by another httpx transport."""
    import httpx
    import uvicorn

    import lb.app
    import lb.runtime
    from lb.server import uvicorn_options

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)

    def factory(**_: object) -> httpx.AsyncBaseTransport:
        if name == "httpx":
            return httpx.AsyncHTTPTransport(limits=limits)
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=limits, trust_env=False)

    lb.runtime.Transport = factory  # type: ignore[assignment,misc]
    os.environ["LB_CONFIG"] = path
    options = uvicorn_options(host=os.environ["LB_HOST"], port=int(os.environ["LB_PORT"]))
    options.pop("workers")
    uvicorn.run(lb.app.LazyApp(), **options)


if __name__ == "__main__":
    main()
