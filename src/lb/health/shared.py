"""The health the workers of one instance share: the leader's active-check verdicts and every
worker's ejections, so that an instance checks each backend once and ejects it everywhere.

One small JSON document in the control directory (`$LB_CONTROL_DIR`), replaced atomically under an
exclusive `flock` (as the control file is, `lb.control.shared`):

    {"backends": [{"pool": "web", "id": "b1", "url": "http://10.0.0.1:8000",
                   "healthy": false,          # written by the leader only (lb.instance)
                   "ejected_until": 5123.4,   # by the worker whose passive health ejected it
                   "pid": 1234}, ...]}

Each field is merged on its own under the lock, so a worker publishing an ejection never overwrites
the leader's verdict with its own, older, copy. `ejected_until` is CLOCK_MONOTONIC time
(`time.monotonic()`), which every process of one machine shares.

Every worker reads the document only when it was replaced (`refresh()`: one `stat`, a read only
then), from a periodic task of the runtime; a wake-up sent by the writer would call `refresh()`
at once instead of at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from lb.instance import Signature, file_signature, write_atomically

logger = logging.getLogger("lb.health")

FILE_NAME = "health.json"
LOCK_NAME = "health.lock"
POLL_INTERVAL = 0.25  # how often a worker looks for a new document: how late it learns a change
MAX_ENTRIES = 4096  # backends remembered; the least recently changed go first

Entry = dict[str, Any]
Subscriber = Callable[[list[Entry]], None]
BackendKey = tuple[str, str, str]  # (pool, backend id, url)


def merge(entries: list[Entry], changes: dict[BackendKey, dict[str, Any]], pid: int) -> list[Entry]:
    """`entries` with `changes` merged field by field; a changed entry moves to the end."""
    by_key: dict[BackendKey, Entry] = {}
    for entry in entries:
        if isinstance(entry, dict):
            by_key[(str(entry.get("pool")), str(entry.get("id")), str(entry.get("url")))] = entry
    for key, fields in changes.items():
        entry = by_key.pop(key, {"pool": key[0], "id": key[1], "url": key[2]})
        entry.update(fields)
        entry["pid"] = pid
        by_key[key] = entry
    return list(by_key.values())[-MAX_ENTRIES:]


class SharedHealth:
    """The shared health document in `directory`: `publish` what this worker saw, `subscribe` to
    what any worker saw. A `Service` of the runtime (stop writes what is still pending)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME)
        self._lock_path = os.path.join(directory, LOCK_NAME)
        self._signature: Signature | None = None
        self._entries: list[Entry] = []
        self._subscribers: list[Subscriber] = []
        self._pending: dict[BackendKey, dict[str, Any]] = {}
        self._writer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<SharedHealth {self.path} [{len(self._entries)} backends]>"

    def entries(self) -> list[Entry]:
        """The document's entries as last read."""
        return self._entries

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber(entries)` each time a new document is read; returns the unsubscribe."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def start(self) -> None:
        self.refresh()

    async def stop(self) -> None:
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def tick(self) -> None:
        """`refresh()`, as a `Periodic` tick."""
        self.refresh()

    def refresh(self) -> bool:
        """Read the document if it was replaced since the last read and tell the subscribers;
        True when it was."""
        signature = file_signature(self.path)
        if signature is None or signature == self._signature:
            return False
        self._signature = signature
        self._entries = self._read()
        for subscriber in list(self._subscribers):
            try:
                subscriber(self._entries)
            except Exception:  # noqa: BLE001 - one pool's trouble must not hide the others'
                logger.exception("applying the shared health in %r failed", subscriber)
        return True

    def publish(self, pool: str, backend_id: str, url: str, **fields: Any) -> None:
        """Tell the other workers `fields` of one backend; written soon, off the event loop."""
        self._pending.setdefault((pool, backend_id, url), {}).update(fields)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_pending(), name="lb shared health"
            )

    async def _write_pending(self) -> None:
        try:
            # Changes made while one write is under way go in the next: in order, and coalesced.
            while self._pending:
                changes, self._pending = self._pending, {}
                try:
                    await asyncio.to_thread(self.write, changes)
                except OSError as exc:
                    logger.error("cannot write the shared health file %s: %s", self.path, exc)
        finally:
            self._writer = None

    def write(self, changes: dict[BackendKey, dict[str, Any]]) -> None:
        """Merge `changes` into the document under the lock. Blocking: run it in a thread."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = merge(self._read(), changes, os.getpid())
            write_atomically(self.directory, self.path, {"backends": entries})

    def _read(self) -> list[Entry]:
        try:
            with open(self.path, encoding="utf-8") as file:
                document = json.load(file)
        except (OSError, ValueError):
            return []
        entries = document.get("backends") if isinstance(document, dict) else None
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
