"""The leader election of an instance's workers: two `Leader`s on one lock file, a leader in
another process that dies, and services that run only on the leader (`LeaderOnly`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lb.instance import LOCK_NAME, Leader, LeaderOnly
from servers import lb_env


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {condition}"
        await asyncio.sleep(0.01)


class Recorded:
    """A service that records its starts and stops."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")


async def test_without_a_control_directory_the_process_leads() -> None:
    leader = Leader(None)
    assert leader.is_leader  # even before start: a single process has nobody to defer to
    await leader.start()
    assert leader.is_leader and "single process" in repr(leader)
    await leader.stop()


async def test_one_of_two_leads_and_the_other_takes_over_when_it_stops(tmp_path: Path) -> None:
    first, second = Leader(str(tmp_path), retry=0.02), Leader(str(tmp_path), retry=0.02)
    changes: list[tuple[str, bool]] = []
    first.on_change(lambda leading: changes.append(("first", leading)))
    unsubscribe = second.on_change(lambda leading: changes.append(("second", leading)))
    await first.start()
    await second.start()
    assert first.is_leader and not second.is_leader
    assert "leader" in repr(first) and "follower" in repr(second)
    assert changes == [("first", True)]
    await asyncio.sleep(0.1)  # the follower keeps trying: still one leader
    assert not second.is_leader
    await first.stop()  # the lock is free: the follower's next try takes it
    await until(lambda: second.is_leader)
    assert changes == [("first", True), ("first", False), ("second", True)]
    unsubscribe()
    await second.stop()
    assert changes[-1] == ("second", True)  # unsubscribed: not told
    assert (tmp_path / LOCK_NAME).exists()


LEAD_UNTIL_KILLED = """
import asyncio, sys
from lb.instance import Leader

async def main():
    leader = Leader(sys.argv[1])
    await leader.start()
    print("leader" if leader.is_leader else "follower", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_the_lock_of_a_killed_leader_process_is_taken_over(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", LEAD_UNTIL_KILLED, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=lb_env(),
    )
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == b"leader\n"
        follower = Leader(str(tmp_path), retry=0.05)
        await follower.start()
        assert not follower.is_leader
        killed = time.monotonic()
        child.kill()  # SIGKILL, no clean-up: the kernel releases the lock
        await until(lambda: follower.is_leader)
        assert time.monotonic() - killed < 1.0
        await follower.stop()
    finally:
        child.kill()
        child.wait(5)
        if child.stdout is not None:
            child.stdout.close()


async def test_leader_only_runs_the_service_while_this_process_leads(tmp_path: Path) -> None:
    first, second = Leader(str(tmp_path), retry=0.02), Leader(str(tmp_path), retry=0.02)
    await first.start()
    await second.start()
    on_first, on_second = Recorded(), Recorded()
    only_first, only_second = LeaderOnly(first, on_first), LeaderOnly(second, on_second)
    await only_first.start()
    await only_second.start()
    assert on_first.events == ["start"] and on_second.events == []
    assert "waiting for the lead" in repr(only_second)
    await first.stop()  # leadership moves: stopped here, started there
    await until(lambda: on_second.events == ["start"])
    assert on_first.events == ["start", "stop"] and only_second.running
    await only_second.stop()
    assert on_second.events == ["start", "stop"]
    await second.stop()
    await only_first.stop()
    assert on_first.events == ["start", "stop"]  # stopped once


async def test_a_failing_listener_does_not_stop_the_others(tmp_path: Path) -> None:
    leader = Leader(str(tmp_path))
    told: list[bool] = []

    def broken(leading: bool) -> None:
        raise RuntimeError("boom")

    leader.on_change(broken)
    leader.on_change(told.append)
    await leader.start()
    assert told == [True]
    await leader.stop()
    assert told == [True, False]
