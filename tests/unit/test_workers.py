"""The worker table and wake-ups of `lb.control.workers`, two workers in one event loop."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from lb.control.workers import Applied, Peers, SharedSeq, live_workers, socket_address


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_ask_wakes_every_live_worker_and_counts_the_acks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict[str, Any]] = []

    async def sync(message: dict[str, Any]) -> None:
        seen.append(message)

    one, two = Peers(str(tmp_path), {"sync": sync}), Peers(str(tmp_path), {"sync": sync})
    await one.start()
    await two.start()
    try:
        assert [row.pid for row in one.table()] == [os.getpid(), os.getpid()]
        applied = await one.ask("sync", {"seq": 7}, timeout=2.0)
        assert applied == Applied(2, 2)
        assert [m["seq"] for m in seen] == [7]
        assert applied.to_json() == {"workers": 2, "of": 2, "not_applied": []}
    finally:
        await two.stop()
        await one.stop()
    assert live_workers(str(tmp_path)) == []  # rows and sockets go with their workers


async def test_a_dead_worker_is_not_waited_for_and_a_slow_one_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    directory = str(tmp_path)
    dead = _dead_pid()
    (tmp_path / f"w-{dead}-x.json").write_text(json.dumps({"pid": dead, "started": 1.0}))

    async def slow(message: dict[str, Any]) -> None:
        await asyncio.sleep(5)

    one, two = Peers(directory, {}), Peers(directory, {"sync": slow})
    await one.start()
    await two.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        applied = await one.ask("sync", {}, timeout=0.3)
        assert loop.time() - started < 2
        assert applied == Applied(1, 2, (os.getpid(),))  # the dead row neither counted nor waited
        assert not (tmp_path / f"w-{dead}-x.json").exists()
    finally:
        await two.stop()
        await one.stop()


async def test_a_row_without_a_socket_counts_as_not_applied(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Alive (this very pid) but not listening: a worker still starting, or wedged.
    (tmp_path / "w-stuck.json").write_text(json.dumps({"pid": os.getpid(), "started": 1.0}))
    one = Peers(str(tmp_path), {})
    await one.start()
    try:
        applied = await one.ask("sync", {}, timeout=0.2)
        assert (applied.workers, applied.of) == (1, 2)
        rows = one.table()
        assert len(rows) == 2 and all(row.last_seen >= row.started for row in rows)
    finally:
        await one.stop()


def test_a_killed_worker_not_yet_reaped_is_dead(tmp_path) -> None:  # type: ignore[no-untyped-def]
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    zombie = process.pid
    (tmp_path / f"w-{zombie}-z.json").write_text(json.dumps({"pid": zombie, "started": 1.0}))
    try:
        # Exited, not waited for: a zombie, which a signal still finds.
        wait_for_zombie(zombie)
        assert live_workers(str(tmp_path)) == []
    finally:
        process.wait()


def wait_for_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as file:
            if file.read().rpartition(b")")[2].split()[0] == b"Z":
                return
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not exit")


def test_shared_seq_is_one_number_for_every_mapping(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = SharedSeq(str(tmp_path)), SharedSeq(str(tmp_path))
    a.raise_to(5)
    a.raise_to(3)  # never lowered: a writer that lost the race does not undo a later change
    assert b.view[0] == 5
    a.close()
    b.close()


def test_long_directories_use_an_abstract_socket() -> None:
    assert socket_address("/tmp/x", "1-a") == "/tmp/x/w-1-a.sock"
    long = "/tmp/" + "d" * 120
    address = socket_address(long, "1-a")
    assert address.startswith("\0lb-") and address.endswith("-1-a")
