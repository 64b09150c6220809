"""Where entries live: the `Store` protocol and the in-process `MemoryStore`.

A store maps a primary key to its variants (one per Vary secondary key). It decides nothing about
HTTP; it only keeps entries until their storage deadline (`Entry.stored_until`) or until its bounds
push them out. A shared store that cannot be reached raises `StoreError`; the cache then passes
requests through.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from lb.cache.entry import Entry
from lb.cache.keys import target_of
from lb.exceptions import LBError

# Bound on the variants of one primary key (a Vary on a high-cardinality field such as
# User-Agent would otherwise fill the store with one URL).
MAX_VARIANTS = 32


class StoreError(LBError):
    """The store could not be reached or answered nonsense."""


class StoreDown(StoreError):
    """Not even tried: the store failed moments ago."""


class Store(Protocol):
    name: str

    async def variants(self, primary: bytes, now: float) -> list[Entry]:
        """The live entries stored under `primary` (any order)."""
        ...

    async def put(self, entry: Entry, now: float) -> None:
        """Store `entry`, replacing the variant with the same secondary key."""
        ...

    async def invalidate(self, primaries: Sequence[bytes]) -> None:
        """Remove every variant of these primary keys."""
        ...

    async def purge(self, target: bytes | None) -> int:
        """Remove the entries of `target` (every host, method and variant), or all of them when
        None. Returns how many primary keys were removed."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """An LRU over primary keys bounded by entry count and bytes; one per process.

    All methods run without awaiting anything, so each is atomic on the event loop.
    """

    name = "memory"

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[bytes, dict[bytes, Entry]] = OrderedDict()
        self.entries = 0
        self.bytes = 0

    def __repr__(self) -> str:
        return (
            f"<MemoryStore [{self.entries}/{self.max_entries} entries, "
            f"{self.bytes}/{self.max_bytes} bytes]>"
        )

    async def variants(self, primary: bytes, now: float) -> list[Entry]:
        variants = self._data.get(primary)
        if variants is None:
            return []
        self._data.move_to_end(primary)
        live = [entry for entry in variants.values() if entry.stored_until > now]
        if len(live) != len(variants):
            for entry in variants.values():
                if entry.stored_until <= now:
                    self._forget(entry)
            if live:
                self._data[primary] = {entry.secondary: entry for entry in live}
            else:
                del self._data[primary]
        return live

    async def put(self, entry: Entry, now: float) -> None:
        if entry.size > self.max_bytes:
            return
        variants = self._data.get(entry.primary)
        if variants is None:
            variants = self._data[entry.primary] = {}
        else:
            self._data.move_to_end(entry.primary)
            old = variants.pop(entry.secondary, None)
            if old is not None:
                self._forget(old)
            while len(variants) >= MAX_VARIANTS:
                self._forget(variants.pop(next(iter(variants))))
        variants[entry.secondary] = entry
        self.entries += 1
        self.bytes += entry.size
        data = self._data
        while (self.entries > self.max_entries or self.bytes > self.max_bytes) and len(data) > 1:
            _, dropped = data.popitem(last=False)
            for old in dropped.values():
                self._forget(old)
        # The newest key alone may still be over the entry bound (many variants): trim it.
        while self.entries > self.max_entries and len(variants) > 1:
            self._forget(variants.pop(next(iter(variants))))

    def _forget(self, entry: Entry) -> None:
        self.entries -= 1
        self.bytes -= entry.size

    async def invalidate(self, primaries: Sequence[bytes]) -> None:
        for primary in primaries:
            self._drop(primary)

    async def purge(self, target: bytes | None) -> int:
        if target is None:
            count = len(self._data)
            self._data.clear()
            self.entries = self.bytes = 0
            return count
        doomed = [key for key in self._data if target_of(key) == target]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def _drop(self, primary: bytes) -> None:
        variants = self._data.pop(primary, None)
        if variants is not None:
            for entry in variants.values():
                self._forget(entry)

    async def close(self) -> None:
        pass
