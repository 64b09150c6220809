"""The control file: how the workers of one instance tell each other about admin changes.

`lb serve --workers N` (and lb's gunicorn worker class) names a private directory in
`$LB_CONTROL_DIR` before the workers start. It holds one small JSON document, replaced
atomically (write a temporary file, then rename) under an exclusive `flock`, so a reader sees the
old or the new document and never half of one, and two workers changing it at once do not lose a
change:

    {"seq": 7,                      # bumped by every change
     "overrides": [OVERRIDE, ...],  # the admin state / weight of backends (see overrides.py)
     "backends": [CHANGE, ...],     # backends the admin API added or removed (see members.py)
     "events": [{"seq": 7, "origin": "host:pid:nonce", "kind": "reload", "data": {},
                 "at": UNIX_TIME}, ...]}

Overrides and backend changes are state: a worker that starts late reads them and catches up.
Events (reload, cache purge) are things to do once: a worker runs those newer than the `seq` it
last saw, except its own. Whoever changes the file raises the shared sequence number
(`workers.SharedSeq`, in the same directory) under the same lock, then wakes the workers
(`workers.Peers`): see `runtime.Control`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from lb.control.workers import SharedSeq
from lb.instance import Signature, file_signature, write_atomically

ENV_DIR = "LB_CONTROL_DIR"
MAX_EVENTS = 64  # events kept in the file; a worker polls far more often than this many happen

Document = dict[str, Any]


def empty_document() -> Document:
    return {"seq": 0, "overrides": [], "backends": [], "events": []}


class ControlFile:
    """The control document in `directory`, read and changed by every worker of an instance."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "control.json")
        self._lock_path = os.path.join(directory, "control.lock")
        self._counter: SharedSeq | None = None

    @property
    def counter(self) -> SharedSeq:
        """The shared copy of the document's `seq` (mapped on first use)."""
        if self._counter is None:
            self._counter = SharedSeq(self.directory)
        return self._counter

    def close(self) -> None:
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.close()

    def __repr__(self) -> str:
        return f"<ControlFile {self.path}>"

    def signature(self) -> Signature | None:
        """Changes whenever the document is replaced (a new inode each time), None when absent."""
        return file_signature(self.path)

    def read(self) -> Document:
        """The current document; an empty one when the file is missing or unreadable."""
        try:
            with open(self.path, encoding="utf-8") as file:
                data = json.load(file)
        except (OSError, ValueError):
            return empty_document()
        if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
            return empty_document()
        for key in ("overrides", "backends", "events"):
            if not isinstance(data.get(key), list):
                data[key] = []
        return data

    def update(self, change: Callable[[Document, int], bool]) -> int | None:
        """Under the lock, let `change(document, seq)` edit the document; when it returns True,
        write it back with `seq` as its new sequence number, raise the shared counter to it and
        return it (else None). Blocking: run it in a thread."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = self.read()
            seq: int = document["seq"] + 1
            if not change(document, seq):
                return None
            document["seq"] = seq
            document["events"] = document["events"][-MAX_EVENTS:]
            self._write(document)
            self.counter.raise_to(seq)
            return seq

    def _write(self, document: Document) -> None:
        write_atomically(self.directory, self.path, document)


def put_override(document: Document, override: dict[str, Any]) -> bool:
    """Put `override` in place of the same backend's in `document`, unless that one is as new or
    newer (changes that crossed: the later one wins). True when the document changed."""
    key = (override["pool"], override["id"])
    kept = []
    for other in document["overrides"]:
        if isinstance(other, dict) and (other.get("pool"), other.get("id")) == key:
            at = other.get("at")
            if isinstance(at, int | float) and at >= override["at"]:
                return False
        else:
            kept.append(other)
    document["overrides"] = [*kept, override]
    return True


def add_event(document: Document, seq: int, origin: str, kind: str, data: dict[str, Any]) -> None:
    event = {"seq": seq, "origin": origin, "kind": kind, "data": data, "at": time.time()}
    document["events"].append(event)


def events_after(document: Document, seen: int, origin: str) -> list[tuple[Any, Any]]:
    """(kind, data) of the events after `seen` that `origin` did not make itself, oldest first."""
    return [
        (event.get("kind"), event.get("data"))
        for event in document["events"]
        if isinstance(event, dict)
        and isinstance(event.get("seq"), int)
        and event["seq"] > seen
        and event.get("origin") != origin
    ]


def replay_from(document: Document, since: float) -> int:
    """The seq a worker starting now catches up from. Events are history (it has just read the
    config), except reloads made at `since` or later: the config file it read may predate them."""
    seen: int = document["seq"]
    for event in document["events"]:
        if not isinstance(event, dict) or event.get("kind") != "reload":
            continue
        at, seq = event.get("at"), event.get("seq")
        if isinstance(at, int | float) and isinstance(seq, int) and at >= since:
            seen = min(seen, seq - 1)
    return seen


def prepare_control_dir() -> Callable[[], None]:
    """Name the control directory for workers about to start (`$LB_CONTROL_DIR`, else a new
    private temporary directory). Returns the cleanup to run when the instance exits."""
    path = os.environ.get(ENV_DIR)
    if path:
        os.makedirs(path, mode=0o700, exist_ok=True)
        return lambda: None
    path = tempfile.mkdtemp(prefix="lb-control-")
    os.environ[ENV_DIR] = path
    owner = os.getpid()

    def cleanup() -> None:
        # Forked workers inherit this; only the process that made the directory removes it.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)
            if os.environ.get(ENV_DIR) == path:
                del os.environ[ENV_DIR]

    return cleanup
