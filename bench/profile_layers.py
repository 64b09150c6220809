"""lb's time by layer from a py-spy collapsed profile (what docs/performance.md tabulates).

    python bench/profile_layers.py PROFILE.collapsed.txt [µs-per-request]

Each sample goes to the layer of the nearest frame (from the leaf up) that belongs to one; stdlib
frames in between are charged to it, and a sample with only the event loop under it is the loop's.
With the CPU µs per request of the same run, the shares are also given in µs per request.
`shares(path)` is the same as a function (bench/run_benchmarks.py's profile table uses it).

The patterns match the files of today's code and of the code before lb's own protocol (the
`lb-before` target of bench/run_benchmarks.py runs a `git archive` of an earlier commit: lb.proxy
was one module there, lb.metrics one file, no lb.connection), by path suffix, so a profile of any
checkout classifies alike. Within a layer's list, a more specific path comes before its package:
the first layer with a matching pattern wins, and the app's files of lb/proxy/ are listed before
the proxy handler's `lb/proxy/`.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

CLIENT = "client side: lb's protocol (lb.server, lb.connection, lb.cycle, lb.httpwire) + uvicorn"
LAYERS = [
    (
        CLIENT,
        (
            "uvicorn/", "lb/server.py", "lb/connection.py", "lb/cycle.py", "lb/httpwire.py",
            "lb/edgerules.py", "lb/proxyproto.py", "lb/serving.py", "lb/worker.py",
        ),
    ),
    ("upstream: lb.transport", ("lb/transport/",)),
    ("upstream: httpx objects", ("httpx/", "httpcore/", "h11/", "anyio/")),
    (
        "app: context, routing, metrics, access log",
        (
            "lb/app.py", "lb/context.py", "lb/routing.py", "lb/proxy/context.py",
            "lb/proxy/routing.py", "lb/proxy/access.py", "lb/proxy/errors.py", "lb/metrics.py",
            "lb/metrics/", "lb/accesslog.py", "prometheus_client/", "lb/errors.py",
            "lb/generation.py", "lb/runtime.py", "lb/dynamic.py", "lb/registry.py",
        ),
    ),
    (
        "proxy handler",
        (
            "lb/proxy.py", "lb/proxy/", "lb/downstream.py", "lb/headers.py", "lb/pool.py",
            "lb/retry.py", "lb/strategy/", "lb/backend.py", "lb/sticky.py", "lb/health/",
            "lb/websocket.py",
        ),
    ),
    ("cache", ("lb/cache/",)),
    ("rate limit", ("lb/ratelimit/",)),
    ("compression", ("lb/compress/",)),
    ("bench shim (lb_target.Mix)", ("lb_target.py",)),
]  # fmt: skip
LOOP = "event loop (uvloop: epoll, reads)"
OTHER = "other (no frame of a layer: C code alone)"
ORDER = [name for name, _ in LAYERS] + [LOOP, OTHER]


def layer(frame: str) -> str | None:
    for name, keys in LAYERS:
        if any(key in frame for key in keys):
            return name
    if "asyncio/runners.py" in frame:
        return LOOP
    return None


def shares(path: Path | str) -> tuple[dict[str, float], int]:
    """Each layer's share of the samples of a collapsed profile, and the number of samples."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not stack:
                continue
            samples = int(n)
            total += samples
            # py-spy's first frame is the process with its command line, which names no layer
            # (though lb_target.py's names the bench shim's file).
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            found = next((g for g in map(layer, reversed(frames)) if g), OTHER)
            counts[found] += samples
    return {name: samples / total for name, samples in counts.most_common()}, total


def main() -> None:
    found, total = shares(sys.argv[1])
    per_request = float(sys.argv[2]) if len(sys.argv) > 2 else None
    for name, share in found.items():
        us = f"  {share * per_request:6.1f} µs" if per_request else ""
        print(f"{share * 100:5.1f}%{us}  {name}")
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
