"""Backends the admin API adds and removes (`POST`/`DELETE .../pools/{pool}/backends`), as state.

Each add or removal is a `BackendChange`, applied here at once and shared like an override: in the
control file (state, so a worker that starts late catches up) and over the Redis bus. When two
changes to one backend cross, the later one (`at`, wall clock) wins everywhere. Pure logic: no I/O.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from lb.backend import Backend
from lb.config import BackendConfig
from lb.config.backends import read_backend
from lb.config.fields import Problems
from lb.control.overrides import MAX_WEIGHT, BackendKey, Live, PatchError, find_backend

logger = logging.getLogger("lb.control")


class Members(Protocol):
    """What adds and removes backends (`lb.runtime.Runtime`): the live generation's pools."""

    @property
    def generation(self) -> Live: ...

    def add_backend(self, pool: str, config: BackendConfig) -> Backend | None: ...

    def remove_backend(self, pool: str, backend_id: str) -> Backend | None: ...


@dataclass(frozen=True)
class BackendChange:
    pool: str
    id: str
    url: str
    weight: int
    removed: bool
    at: float

    @property
    def key(self) -> BackendKey:
        return (self.pool, self.id)

    def config(self) -> BackendConfig:
        return BackendConfig(self.url, self.id, self.weight, origin="api")

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "id": self.id,
            "url": self.url,
            "weight": self.weight,
            "removed": self.removed,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: Any) -> BackendChange | None:
        """The change in `data`, or None when it is not one (a file or message from elsewhere)."""
        if not isinstance(data, dict):
            return None
        pool, backend_id, url = data.get("pool"), data.get("id"), data.get("url")
        weight, removed, at = data.get("weight"), data.get("removed"), data.get("at")
        if not (isinstance(pool, str) and isinstance(backend_id, str) and isinstance(url, str)):
            return None
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
            return None
        if not isinstance(removed, bool):
            return None
        if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
            return None
        return cls(pool, backend_id, url, weight, removed, float(at))


def parse_backend(body: bytes) -> BackendConfig:
    """The backend in a `POST .../backends` body `{"url", "weight", "id"}`, validated by the
    code that validates the config file's backends. Raises `PatchError` with key paths."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PatchError([f"body: not JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise PatchError([f"body: expected a JSON object, got {type(data).__name__}"])
    problems = Problems()
    backend, _ = read_backend(data, "", problems, origin="api")
    if backend is not None and backend.weight > MAX_WEIGHT:
        problems.add("weight", f"expected a whole number from 0 to {MAX_WEIGHT}")
    if problems or backend is None:
        raise PatchError(problems.lines or ["body: not a backend"])
    return backend


def put_backend(document: dict[str, Any], change: dict[str, Any]) -> bool:
    """Put `change` in place of the same backend's in the control `document`, unless that one is
    as new or newer. True when the document changed."""
    key = (change["pool"], change["id"])
    kept = []
    for other in document["backends"]:
        if isinstance(other, dict) and (other.get("pool"), other.get("id")) == key:
            at = other.get("at")
            if isinstance(at, int | float) and at >= change["at"]:
                return False
        else:
            kept.append(other)
    document["backends"] = [*kept, change]
    return True


class ApiBackends:
    """The latest change to each backend the admin API added or removed, applied to the runtime."""

    def __init__(self, runtime: Members) -> None:
        self.runtime = runtime
        self.changes: dict[BackendKey, BackendChange] = {}

    def __repr__(self) -> str:
        added = sum(1 for c in self.changes.values() if not c.removed)
        return f"<ApiBackends [{added} added, {len(self.changes) - added} removed]>"

    def add(self, pool: str, config: BackendConfig) -> tuple[Backend, BackendChange]:
        """Add `config` to the live `pool`. Raises KeyError when there is no such pool,
        ValueError when it has a backend of that id."""
        if pool not in self.runtime.generation.pools:
            raise KeyError(pool)
        backend = self.runtime.add_backend(pool, config)
        if backend is None:
            raise ValueError(config.id)
        logger.info(
            "backend %s (%s) added to pool %s by the admin API", config.id, config.url, pool
        )
        change = BackendChange(pool, config.id, config.url, config.weight, False, time.time())
        self.changes[change.key] = change
        return backend, change

    def remove(self, pool: str, backend_id: str) -> tuple[Backend, BackendChange]:
        """Set an API backend draining; it goes once idle. Raises KeyError when there is no such
        backend, ValueError when it came from elsewhere (the file, DNS would bring it back)."""
        backend = find_backend(self.runtime.generation, pool, backend_id)
        if backend is None:
            raise KeyError((pool, backend_id))
        if backend.origin != "api":
            raise ValueError(backend.origin)
        self.runtime.remove_backend(pool, backend_id)
        logger.info("backend %s removed from pool %s by the admin API: draining", backend_id, pool)
        weight = backend.config_weight
        change = BackendChange(pool, backend_id, backend.url, weight, True, time.time())
        self.changes[change.key] = change
        return backend, change

    def take(self, change: BackendChange) -> bool:
        """Apply a peer's change unless this process knows one as new; True when taken."""
        current = self.changes.get(change.key)
        if current is not None and current.at >= change.at:
            return False
        self.changes[change.key] = change
        if not change.removed:
            self.runtime.add_backend(change.pool, change.config())
            return True
        backend = find_backend(self.runtime.generation, change.pool, change.id)
        if backend is not None and backend.origin == "api" and backend.url == change.url:
            self.runtime.remove_backend(change.pool, change.id)
        return True

    def take_all(self, document: dict[str, Any]) -> None:
        """Catch up with the changes in the control file (a worker that starts late)."""
        for item in document["backends"]:
            change = BackendChange.from_json(item)
            if change is not None:
                self.take(change)
