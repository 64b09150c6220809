"""lb's time by layer from a py-spy collapsed profile (what docs/performance.md tabulates).

    python bench/profile_layers.py PROFILE.collapsed.txt [µs-per-request]

Each sample goes to the layer of the nearest frame (from the leaf up) that belongs to one; stdlib
frames in between are charged to it, and a sample with only the event loop under it is the loop's.
With the CPU µs per request of the same run, the shares are also given in µs per request.
"""

from __future__ import annotations

import collections
import sys

LAYERS = [
    (
        "client side: lb's protocol (lb.server, lb.connection, lb.cycle, lb.httpwire) + uvicorn",
        (
            "uvicorn/", "lb/server.py", "lb/connection.py", "lb/cycle.py", "lb/httpwire.py",
            "lb/edgerules.py",
        ),
    ),
    ("upstream: lb.transport", ("lb/transport/",)),
    ("upstream: httpx objects", ("httpx/", "httpcore/", "h11/", "anyio/")),
    (
        "proxy handler",
        (
            "lb/proxy.py", "lb/downstream.py", "lb/headers.py", "lb/pool.py", "lb/retry.py",
            "lb/proxy/handler.py", "lb/proxy/downstream.py", "lb/proxy/headers.py",
            "lb/proxy/retry.py", "lb/proxy/websocket.py",
            "lb/strategy/", "lb/backend.py", "lb/sticky.py", "lb/health/",
        ),
    ),
    (
        "app: context, routing, metrics, access log",
        (
            "lb/app.py", "lb/context.py", "lb/routing.py", "lb/proxy/context.py",
            "lb/proxy/routing.py", "lb/metrics.py", "lb/metrics/", "lb/accesslog.py",
            "lb/proxy/errors.py",
            "prometheus_client/", "lb/errors.py", "lb/generation.py",
        ),
    ),
    ("cache", ("lb/cache/",)),
    ("rate limit", ("lb/ratelimit/",)),
    ("bench shim (lb_target.Mix)", ("lb_target.py",)),
]  # fmt: skip
LOOP = "event loop (uvloop: epoll, reads)"


def layer(frame: str) -> str | None:
    for name, keys in LAYERS:
        if any(key in frame for key in keys):
            return name
    if "asyncio/runners.py" in frame:
        return LOOP
    return None


def main() -> None:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(sys.argv[1]) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not stack:
                continue
            samples = int(n)
            total += samples
            found = next((g for g in map(layer, reversed(stack.split(";"))) if g), "other")
            counts[found] += samples
    per_request = float(sys.argv[2]) if len(sys.argv) > 2 else None
    for name, samples in counts.most_common():
        share = samples / total
        us = f"  {share * per_request:6.1f} µs" if per_request else ""
        print(f"{share * 100:5.1f}%{us}  {name}")
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
