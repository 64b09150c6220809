"""Runtime overrides of backends (admin state, weight) and the PATCH body that sets them.

An override is what an operator changed through the admin API, on top of the config: it is applied
to the live generation at once, re-applied after every reload, and shared with the other workers
(and instances) as data, so every process converges on the same state whatever order it hears of
changes in. Pure logic: no I/O here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, cast

from lb.backend import AdminState
from lb.config import Config
from lb.exceptions import LBError

if TYPE_CHECKING:
    from lb.backend import Backend
    from lb.pool import Pool

ADMIN_STATES: tuple[AdminState, ...] = ("active", "draining", "disabled")
MAX_WEIGHT = 1_000_000
BackendKey = tuple[str, str]  # (pool name, backend id)


class Live(Protocol):
    """What control reads of a generation (`lb.generation.Generation`): its config and pools."""

    @property
    def config(self) -> Config: ...

    @property
    def pools(self) -> Mapping[str, Pool]: ...


class PatchError(LBError, ValueError):
    """An admin body (PATCH a backend, POST a new one) that cannot be applied; `problems` name
    each mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Override:
    """What the admin API changed about one backend.

    `url` ties the override to the backend it was made for: a reload that gives the id another URL
    makes it a new backend, which the override does not touch. `config_weight` is the weight the
    config gave when the weight was overridden; once a reload changes the configured weight, the
    file wins (HAProxy keeps a runtime weight across reloads on the same rule). `at` is the wall
    clock time of the change: when two changes to one backend cross, the later one wins everywhere.
    """

    pool: str
    id: str
    url: str
    state: AdminState | None = None
    weight: int | None = None
    config_weight: int | None = None
    at: float = 0.0

    @property
    def key(self) -> BackendKey:
        return (self.pool, self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "id": self.id,
            "url": self.url,
            "state": self.state,
            "weight": self.weight,
            "config_weight": self.config_weight,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: Any) -> Override | None:
        """The override in `data`, or None when it is not one (a file or message from elsewhere)."""
        if not isinstance(data, dict):
            return None
        pool, backend_id, url = data.get("pool"), data.get("id"), data.get("url")
        state, weight = data.get("state"), data.get("weight")
        config_weight, at = data.get("config_weight"), data.get("at", 0.0)
        if not (isinstance(pool, str) and isinstance(backend_id, str) and isinstance(url, str)):
            return None
        if state is not None and state not in ADMIN_STATES:
            return None
        if not all(_is_weight(w) for w in (weight, config_weight) if w is not None):
            return None
        if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
            return None
        return cls(pool, backend_id, url, cast(AdminState | None, state), weight, config_weight, at)

    def merged(
        self, state: AdminState | None, weight: int | None, config_weight: int | None, at: float
    ) -> Override:
        """This override with a PATCH's fields laid over it."""
        changed = replace(self, at=at)
        if state is not None:
            changed = replace(changed, state=state)
        if weight is not None:
            changed = replace(changed, weight=weight, config_weight=config_weight)
        return changed


def _is_weight(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WEIGHT


def parse_patch(body: bytes) -> tuple[AdminState | None, int | None]:
    """(state, weight) from a PATCH body `{"state": ..., "weight": N}`; either may be absent.

    Raises `PatchError` naming every problem.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PatchError([f"body: not JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise PatchError([f"body: expected a JSON object, got {type(data).__name__}"])
    problems = [f"{key}: unknown key" for key in data if key not in ("state", "weight")]
    state = data.get("state")
    weight = data.get("weight")
    if "state" in data and state not in ADMIN_STATES:
        problems.append(f"state: expected one of {', '.join(ADMIN_STATES)}, got {state!r}")
    if "weight" in data and not _is_weight(weight):
        problems.append(f"weight: expected a whole number from 0 to {MAX_WEIGHT}, got {weight!r}")
    if not problems and "state" not in data and "weight" not in data:
        problems.append('body: expected "state" and/or "weight"')
    if problems:
        raise PatchError(problems)
    return cast(AdminState | None, state), weight


def find_backend(gen: Live, pool: str, backend_id: str) -> Backend | None:
    found = gen.pools.get(pool)
    return found.backends.get(backend_id) if found is not None else None


def configured_weight(gen: Live, pool: str, backend_id: str) -> int | None:
    """The weight `gen`'s config gives the backend (what a reload resets it to)."""
    pool_config = gen.config.pools.get(pool)
    if pool_config is None:
        return None
    for backend in pool_config.backends:
        if backend.id == backend_id:
            return backend.weight
    return None


def apply(override: Override, gen: Live) -> bool:
    """Lay `override` over the live backend it was made for; False when `gen` has no such backend.

    Synchronous on purpose: no request sees a half-applied override.
    """
    backend = find_backend(gen, override.pool, override.id)
    if backend is None or backend.url != override.url:
        return False
    if override.weight is not None and override.config_weight == configured_weight(
        gen, override.pool, override.id
    ):
        # config_weight is what the operator set (slow start ramps `weight` up towards it).
        backend.config_weight = override.weight
        backend.set_weight(override.weight)
    if override.state is not None:
        backend.set_admin_state(override.state)
    return True
