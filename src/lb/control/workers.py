"""The workers of one instance: who is alive, and how one wakes the others (`Peers`).

Next to the control file (`shared.py`), each worker keeps in the control directory:

- `w-NAME.json`, its row of the worker table: `{"pid", "started"}` (NAME is the pid and a nonce:
  two apps in one process are two workers); the file's mtime is its last heartbeat (touched every
  `HEARTBEAT` seconds by its event loop, so a stuck loop shows);
- `w-NAME.sock`, a datagram socket its event loop reads (`loop.add_reader`): another worker sends
  it `{"op", "id", "reply", ...}`, it runs the op's handler and answers `{"op": "ack", "id",
  "name"}` on the asker's socket. A wake-up, not a poll: an idle worker acts at once;
- `seq`, 8 bytes every worker maps (`SharedSeq`): the control file's sequence number, raised by
  whoever changes the file, so a worker about to serve a request sees with one memory read that
  it is behind, and catches up first.

A worker whose pid is gone is not live: its row and socket are removed by whoever notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import json
import logging
import mmap
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lb.multiprocess import process_alive

logger = logging.getLogger("lb.control")

HEARTBEAT = 1.0  # seconds between touches of a worker's row (its `last_seen`)
_MAX_DATAGRAM = 65536

Op = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class WorkerInfo:
    """One row of the worker table, as `GET /_lb/status` shows it."""

    pid: int
    started: float
    last_seen: float
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "started": round(self.started, 3),
            "last_seen": round(self.last_seen, 3),
        }


@dataclass(frozen=True)
class Applied:
    """How far an admin change got before its answer: `workers` of the `of` live workers of this
    instance applied it (the one that took the request included); `not_applied` names the pids
    that did not answer in time; `instances`, with a Redis bus, how many other instances did."""

    workers: int
    of: int
    not_applied: tuple[int, ...] = ()
    instances: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workers": self.workers,
            "of": self.of,
            "not_applied": [{"pid": pid} for pid in self.not_applied],
        }
        if self.instances is not None:
            out["instances"] = self.instances
        return out


ALONE = Applied(1, 1)  # a single process: the worker that took the change is all there is


class SharedSeq:
    """The control file's sequence number in 8 bytes of shared memory (the `seq` file)."""

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, "seq")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)  # zero-filled; a concurrent truncate to 8 is the same
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        self.view = memoryview(self._map).cast("Q")

    def __repr__(self) -> str:
        return f"<SharedSeq {self.view[0]}>"

    def raise_to(self, seq: int) -> None:
        """Called under the control file's lock, right after the file got `seq`."""
        if self.view[0] < seq:
            self.view[0] = seq  # one aligned 8-byte store: readers see old or new

    def close(self) -> None:
        self.view.release()
        self._map.close()


def socket_address(directory: str, name: str) -> str:
    """Where worker `name` listens: a file in `directory`, or (a path too long for a socket) a
    Linux abstract name derived from it."""
    path = os.path.join(directory, f"w-{name}.sock")
    if len(os.fsencode(path)) < 100:
        return path
    digest = hashlib.sha1(os.fsencode(directory)).hexdigest()[:20]
    return f"\0lb-{digest}-{name}"


def send(sock: socket.socket, address: str, message: dict[str, Any]) -> bool:
    """One datagram to `address`; False when nobody listens there (or its queue is full)."""
    try:
        sock.sendto(json.dumps(message).encode(), address)
    except OSError:
        return False
    return True


def live_workers(directory: str) -> list[WorkerInfo]:
    """The worker table of `directory`, rows of dead pids removed on the way."""
    rows = []
    for path in glob.glob(os.path.join(directory, "w-*.json")):
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            last_seen = os.stat(path).st_mtime
            pid, started = int(data["pid"]), float(data["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written or removed
        name = os.path.basename(path)[2:-5]
        if not process_alive(pid):
            _remove_row(directory, name)
            continue
        # The file clock is coarser than time.time(): a row just written may look older.
        rows.append(WorkerInfo(pid, started, max(last_seen, started), name))
    return sorted(rows, key=lambda row: (row.started, row.name))


def _remove_row(directory: str, name: str) -> None:
    for path in (f"w-{name}.json", f"w-{name}.sock"):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, path))


def wake_all(directory: str, message: dict[str, Any]) -> None:
    """Send `message` to every live worker, expecting no answer (the supervisor does)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for row in live_workers(directory):
            send(sock, socket_address(directory, row.name), message)


@dataclass
class _Pending:
    waiting: set[str]
    acked: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Peers:
    """This worker's row, socket and heartbeat; asks the other live workers to run an op."""

    def __init__(self, directory: str, ops: Mapping[str, Op]) -> None:
        self.directory = directory
        self.ops = dict(ops)
        self.pid = 0
        self.name = ""
        self.started = 0.0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, _Pending] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Peers {self.name} in {self.directory}, {len(self._pending)} pending>"

    @property
    def row_path(self) -> str:
        return os.path.join(self.directory, f"w-{self.name}.json")

    async def start(self) -> None:
        self.pid, self.started = os.getpid(), time.time()
        self.name = f"{self.pid}-{secrets.token_hex(3)}"
        address = socket_address(self.directory, self.name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(address)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        # The row last: once others see it, they may send, and the socket is ready.
        tmp = self.row_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump({"pid": self.pid, "started": self.started}, file)
        os.replace(tmp, self.row_path)
        self._heartbeat = self._loop.create_task(self._beat(), name="lb worker heartbeat")

    async def stop(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks, self._tasks = set(self._tasks), set()
        for pending_task in tasks:
            pending_task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            _remove_row(self.directory, self.name)

    def table(self) -> list[WorkerInfo]:
        return live_workers(self.directory)

    async def ask(self, op: str, data: Mapping[str, Any], timeout: float) -> Applied:
        """Have every other live worker run `op` with `data`; wait (at most `timeout`) for their
        acks. Blocking file reads of the table are small: done on the loop."""
        assert self._sock is not None
        others = {row.name: row.pid for row in self.table() if row.name != self.name}
        self._next_id += 1
        ask_id = f"{self.name}:{self._next_id}"
        pending = _Pending(set(others))
        reply = socket_address(self.directory, self.name)
        message = {**data, "op": op, "id": ask_id, "reply": reply}
        for name, pid in list(others.items()):
            if not send(self._sock, socket_address(self.directory, name), message):
                pending.waiting.discard(name)
                if not process_alive(pid):
                    _remove_row(self.directory, name)
                    del others[name]
        if pending.waiting:
            self._pending[ask_id] = pending
            try:
                async with asyncio.timeout(timeout):
                    await pending.done.wait()
            except TimeoutError:
                pass
            finally:
                del self._pending[ask_id]
        missing = tuple(pid for name, pid in others.items() if name not in pending.acked)
        return Applied(1 + len(pending.acked), 1 + len(others), missing)

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                raw = self._sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("worker socket: %s", exc)
                return
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict):
                self._received(message)

    def _received(self, message: dict[str, Any]) -> None:
        op, ask_id = message.get("op"), message.get("id")
        if op == "ack":
            pending = self._pending.get(ask_id) if isinstance(ask_id, str) else None
            name = message.get("name")
            if pending is not None and isinstance(name, str) and name in pending.waiting:
                pending.acked.add(name)
                if pending.acked >= pending.waiting:
                    pending.done.set()
            return
        handler = self.ops.get(op) if isinstance(op, str) else None
        if handler is None:
            return
        task = asyncio.ensure_future(self._run(handler, message))
        self._tasks.add(task)  # referenced until done
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: Op, message: dict[str, Any]) -> None:
        try:
            await handler(message)
        except Exception:  # noqa: BLE001 - a peer's request must not take this worker down
            logger.exception("running %s for another worker", message.get("op"))
            return
        reply, ask_id = message.get("reply"), message.get("id")
        if isinstance(reply, str) and isinstance(ask_id, str) and self._sock is not None:
            send(self._sock, reply, {"op": "ack", "id": ask_id, "name": self.name})

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                os.utime(self.row_path)
            except FileNotFoundError:
                # Removed by a worker that thought this pid dead (a pid namespace quirk): back.
                with open(self.row_path, "w", encoding="utf-8") as file:
                    json.dump({"pid": self.pid, "started": self.started}, file)
            except OSError as exc:
                logger.warning("worker heartbeat: %s", exc)
