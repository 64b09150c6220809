"""Start `lb serve` for the shared benchmark harness (its custom-target contract).

Reads LB_HOST, LB_PORT, LB_BACKENDS, LB_WORKERS, LB_OPT_PROFILE (`proxy` or `full`) and
LB_OPT_TRANSPORT (`lb`, the default; `httpx`: httpx's own transport; `aiohttp`: the httpx-aiohttp
transport — one worker only, for the transport comparison in docs/transport.md) from the
environment, writes a config for them and runs `lb serve`. `full` turns every feature on:
least_latency, active health checks, a rate limit that never triggers, a cache (the harness's paths
are uncacheable unless the backends say otherwise), metrics and an access log to a file.
"""

from __future__ import annotations

import os
import sys
import tempfile

import yaml


def build_config(backends: list[str], profile: str, workdir: str) -> dict[str, object]:
    pool: dict[str, object] = {"backends": backends, "strategy": "round_robin"}
    config: dict[str, object] = {"pools": {"web": pool}, "logging": {"access_log": False}}
    if profile == "full":
        pool["strategy"] = "least_latency"
        pool["health_check"] = {"path": "/", "interval": "2s", "timeout": "1s"}
        pool["passive_health"] = {"max_failures": 5, "ejection_time": "10s"}
        config["rate_limit"] = {"rate": 1_000_000, "burst": 1_000_000, "key": "client_ip"}
        config["cache"] = {"store": "memory", "max_entries": 10_000}
        config["logging"] = {"access_log": True, "file": os.path.join(workdir, "access.log")}
    return config


def main() -> None:
    backends = os.environ["LB_BACKENDS"].split(",")
    profile = os.environ.get("LB_OPT_PROFILE", "proxy")
    workdir = tempfile.mkdtemp(prefix="lb-bench-")
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(build_config(backends, profile, workdir), f)
    transport = os.environ.get("LB_OPT_TRANSPORT", "lb")
    if transport != "lb":
        return serve_with_transport(transport, path)
    args = [sys.executable, "-m", "lb", "serve", "-c", path, "--host", os.environ["LB_HOST"]]
    args += ["--port", os.environ["LB_PORT"], "--workers", os.environ.get("LB_WORKERS", "1")]
    os.execv(sys.executable, args)


def serve_with_transport(name: str, path: str) -> None:
    """One worker in this process, with `lb.app.Transport` replaced by another httpx transport."""
    import httpx
    import uvicorn

    import lb.app
    from lb.server import uvicorn_options

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)

    def factory(**_: object) -> httpx.AsyncBaseTransport:
        if name == "httpx":
            return httpx.AsyncHTTPTransport(limits=limits)
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=limits, trust_env=False)

    lb.app.Transport = factory  # type: ignore[assignment,misc]
    os.environ["LB_CONFIG"] = path
    options = uvicorn_options(host=os.environ["LB_HOST"], port=int(os.environ["LB_PORT"]))
    options.pop("workers")
    uvicorn.run(lb.app.LazyApp(), **options)


if __name__ == "__main__":
    main()
