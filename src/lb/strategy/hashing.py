"""Hashing strategies: the same key (client IP by default, see `hash_key`) goes to the same backend.

Hashes are `stable_hash` (blake2b), never Python's salted `hash()`, so every worker and every
instance maps a key to the same backend.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from lb.backend import Backend
from lb.strategy import options
from lb.strategy.base import PickRequest, stable_hash
from lb.strategy.weighted import WeightTable, table_for


class IpHash:
    """The key's hash modulo the total weight: cheap and even, but a change in the usable set
    moves most keys. Use `consistent_hash` when keys should stay put."""

    def __init__(self) -> None:
        self._table: WeightTable | None = None

    def __repr__(self) -> str:
        return "<IpHash>"

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        if not backends:
            return None
        table = self._table = table_for(self._table, backends)
        point = stable_hash(request.key)
        if table.uniform:
            return backends[point % len(backends)]
        return backends[bisect_right(table.cumulative, point % table.total)]


def _points(backend_id: str, count: int, cache: dict[str, list[int]]) -> list[int]:
    """The first `count` ring positions of a backend. They depend on its id only, and a longer
    list extends a shorter one, so a weight change moves only the difference."""
    points = cache.get(backend_id)
    if points is None:
        points = cache[backend_id] = []
    block = len(points) // 8
    while len(points) < count:
        digest = hashlib.blake2b(f"{backend_id}#{block}".encode(), digest_size=64).digest()
        points.extend(int.from_bytes(digest[i : i + 8], "big") for i in range(0, 64, 8))
        block += 1
    return points[:count]


class ConsistentHash:
    """A hash ring with `vnodes` points per unit of weight (default 160): removing one of N
    backends moves only the keys it held (about 1/N), and a joining backend takes about 1/(N+1).

    `load_factor` (e.g. 1.25, default off) bounds load as in "Consistent Hashing with Bounded
    Loads" (Mirrokni et al.; HAProxy's hash-balance-factor): a backend already holding more than
    `load_factor` × its weighted share of the requests in flight is skipped for the next one on the
    ring, so one hot key cannot overload one backend.

    The ring is rebuilt only when a backend joins or a weight changes; a backend leaving the usable
    set is skipped on the walk, which gives exactly the ring a fresh build without it would.
    """

    def __init__(self, vnodes: object = 160, load_factor: object = None) -> None:
        self._vnodes = options.integer("vnodes", vnodes, 1, 10_000)
        self._load_factor = (
            None if load_factor is None else options.number("load_factor", load_factor, above=1.0)
        )
        self._point_cache: dict[str, list[int]] = {}
        self._backends: Sequence[Backend] = ()
        self._members: dict[Backend, float] = {}  # on the ring, with the weight it was built for
        self._positions: list[int] = []
        self._owners: list[Backend] = []
        self._allowed: frozenset[Backend] | None = None  # None: every ring member may be picked
        self._total_weight = 0.0
        self._outstanding = 0

    def __repr__(self) -> str:
        factor = f" load_factor={self._load_factor:g}" if self._load_factor else ""
        size = f"{len(self._members)} backends, {len(self._positions)} points"
        return f"<ConsistentHash {size}{factor}>"

    def _update(self, backends: Sequence[Backend]) -> None:
        members = self._members
        if all(members.get(b) == b.weight for b in backends):
            self._allowed = None if len(backends) == len(members) else frozenset(backends)
        else:
            self._build(backends)
            self._allowed = None
        self._total_weight = sum(b.weight for b in backends)
        self._backends = backends

    def _build(self, backends: Sequence[Backend]) -> None:
        owner_of: dict[int, Backend] = {}
        for backend in backends:
            count = round(self._vnodes * backend.weight)  # weights are fractional in slow start
            for point in _points(backend.id, count, self._point_cache):
                other = owner_of.setdefault(point, backend)
                # A 64-bit collision: decide by id, so every process builds the same ring.
                if other is not backend and backend.id < other.id:
                    owner_of[point] = backend
        self._positions = sorted(owner_of)
        self._owners = [owner_of[p] for p in self._positions]
        self._members = {b: b.weight for b in backends}

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        if backends is not self._backends:
            self._update(backends)
        if not backends:
            return None
        index = bisect_left(self._positions, stable_hash(request.key))
        if index == len(self._positions):
            index = 0
        if self._allowed is None and self._load_factor is None:
            return self._owners[index]
        return self._walk(index, len(backends))

    def _walk(self, start: int, usable: int) -> Backend | None:
        """Clockwise from `start`: the first usable backend with room (any usable one without a
        load factor); the key's own backend when none has room."""
        owners = self._owners
        size = len(owners)
        allowed = self._allowed
        factor = self._load_factor
        # Capacity per unit of weight: factor × the requests in flight, this one included, shared
        # by weight. Some backend always has room, since capacities add up to more than that.
        share = 0.0 if factor is None else factor * (self._outstanding + 1) / self._total_weight
        home: Backend | None = None
        full: set[Backend] = set()
        for step in range(size):
            backend = owners[(start + step) % size]
            if allowed is not None and backend not in allowed:
                continue
            if factor is None or backend.active_requests < math.ceil(share * backend.weight):
                return backend
            if home is None:
                home = backend
            full.add(backend)
            if len(full) >= usable:
                break
        return home

    def on_start(self, backend: Backend) -> None:
        self._outstanding += 1

    def on_done(self, backend: Backend, seconds: float, ok: bool) -> None:
        if self._outstanding > 0:
            self._outstanding -= 1
