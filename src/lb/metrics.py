"""Metrics events: every layer reports through the app's `Metrics` object (`app.metrics`).

This module fixes the event API; each method is called synchronously on the hot path and must be
cheap. Labels are bounded: pool and backend ids, methods, status classes, never paths or client IPs.
"""

from __future__ import annotations


class Metrics:
    """One per app (two apps in one process share nothing)."""

    def request(
        self, pool: str, backend: str | None, method: str, status: int, seconds: float
    ) -> None:
        """A proxied request finished (backend None: the balancer answered itself)."""

    def upstream_error(self, pool: str, backend: str, kind: str) -> None:
        """kind: connect_error | timeout | bad_response | aborted."""

    def retry(self, pool: str) -> None:
        """A request was retried on another backend."""

    def health_check(self, pool: str, backend: str, result: str) -> None:
        """result: success | failure | timeout | error."""

    def ejection(self, pool: str, backend: str) -> None:
        """Passive health ejected a backend."""

    def panic(self, pool: str, active: bool) -> None:
        """A pool entered (True) or left (False) panic mode."""

    def rate_limit(self, allowed: bool) -> None:
        """A rate-limit decision."""

    def store_error(self, store: str) -> None:
        """store: ratelimit | cache. A shared store (redis) could not be reached."""

    def cache(self, result: str) -> None:
        """result: HIT | MISS | STALE | BYPASS."""
