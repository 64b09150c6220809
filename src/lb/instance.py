"""The leader of an instance: the one worker that runs what must run once per instance.

The workers of one instance (`lb serve --workers N`, gunicorn with lb's worker) share a control
directory (`$LB_CONTROL_DIR`, see `lb.control.shared`). Each tries to take an exclusive,
non-blocking `flock` on `leader.lock` there; the one that gets it is the leader and keeps the lock
(an open file) as long as it lives. The others try again every `RETRY_INTERVAL`: when the leader
dies, the kernel releases its lock and one of them takes over within that time. A process with no
control directory (one worker, or lb embedded in a host app) is always the leader.

Services that must run once per instance (active health checks, DNS discovery) go behind
`LeaderOnly`, or follow `Leader.on_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable
from typing import IO

from lb.types import Service

logger = logging.getLogger("lb.instance")

LOCK_NAME = "leader.lock"
RETRY_INTERVAL = 0.5  # how often a follower tries the lock: the longest takeover delay

Listener = Callable[[bool], None]


class Leader:
    """Elects one worker of an instance by a lock in `directory`; a `Service` of the runtime.

    `is_leader` says whether this process leads now. Listeners registered with `on_change` are
    called (synchronously, on the event loop) with True when this process becomes the leader and
    with False when it stops being one (only when it stops: a live leader keeps the lock).
    """

    def __init__(self, directory: str | None, *, retry: float = RETRY_INTERVAL) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME) if directory else None
        self.retry = retry
        self.is_leader = directory is None
        self._file: IO[bytes] | None = None
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._running = False

    def __repr__(self) -> str:
        role = "leader" if self.is_leader else "follower"
        where = self.path or "single process"
        return f"<Leader {role} [{where}]>"

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(is_leader)` whenever leadership changes; returns the unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        if self.path is None:
            self._set(True)
            return
        # Decided before the services start, so that whoever leads checks from the first second.
        if not self.try_acquire():
            self._task = asyncio.get_running_loop().create_task(self._retry(), name="lb leader")

    async def stop(self) -> None:
        """Give up the lead (another worker takes over) and stop trying for it."""
        self._running = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set(False)
        if self._file is not None:
            self._file.close()  # releases the lock
            self._file = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (never waits); True when this process leads."""
        if self.is_leader or self.path is None:
            return self.is_leader
        try:
            file = open(self.path, "ab")  # noqa: SIM115 - kept open while this process leads
        except OSError as exc:
            logger.error("cannot open the leader lock %s: %s", self.path, exc)
            return False
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self._file = file
        logger.info("this worker (pid %d) leads the instance", os.getpid())
        self._set(True)
        return True

    async def _retry(self) -> None:
        while not self.try_acquire():
            await asyncio.sleep(self.retry)

    def _set(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        self.is_leader = leading
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                logger.exception("leadership listener %r failed", listener)


class LeaderOnly:
    """A `Service` that runs `service` only while `leader` leads: started when this process
    becomes the leader (or at start if it already is), stopped when it stops leading."""

    def __init__(self, leader: Leader, service: Service) -> None:
        self.leader = leader
        self.service = service
        self.running = False
        self._lock = asyncio.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "running" if self.running else "waiting for the lead"
        return f"<LeaderOnly {self.service!r} [{state}]>"

    async def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.leader.on_change(self._changed)
        await self._follow()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._follow()

    def _changed(self, leading: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._follow_logged())
        self._tasks.add(task)  # referenced until done: an unreferenced task may be collected
        task.add_done_callback(self._tasks.discard)

    async def _follow_logged(self) -> None:
        try:
            await self._follow()
        except Exception:  # noqa: BLE001 - nobody awaits a takeover: say what went wrong
            logger.exception("starting or stopping %r on a change of leader failed", self.service)

    async def _follow(self) -> None:
        """Run the service if this process leads and this wrapper is started, else stop it."""
        # Under the lock, reading the state only once it is held: a start and a stop never
        # interleave, and the last change wins however quickly they come.
        async with self._lock:
            leading = self._unsubscribe is not None and self.leader.is_leader
            if leading and not self.running:
                await self.service.start()
                self.running = True
            elif not leading and self.running:
                self.running = False
                await self.service.stop()


Signature = tuple[int, int, int]  # (inode, mtime ns, size) of a file


def file_signature(path: str) -> Signature | None:
    """Changes whenever the file at `path` is replaced (a new inode each time, as
    `write_atomically` makes) or rewritten; None when it is absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def write_atomically(directory: str, path: str, document: object) -> None:
    """Replace the JSON file `path` (in `directory`) with `document`: written to a temporary file
    first, then renamed, so a reader sees the old or the new document, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=".lb-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(document, file, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
