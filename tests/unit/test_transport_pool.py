"""lb.transport.pool: per-origin bookkeeping with fake connections and a fake clock."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lb.transport import Limits, PoolOverflow, Transport, request_sent
from lb.transport.pool import OriginPool


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeConn:
    def __init__(self, pool: OriginPool[FakeConn], name: str) -> None:
        self.pool = pool
        self.name = name
        self.closed = False
        self.pooled = False
        self.keepalive = pool.keepalive_expiry  # as lb's Connection starts
        self.expires = 0.0
        self.exchanges = 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)

    def abort(self, error: BaseException | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return self.name


def make_pool(
    clock: FakeClock, *, max_connections: int = 10, max_idle: int = 10, expiry: float = 30.0
) -> OriginPool[FakeConn]:
    return OriginPool(
        "http://backend:80",
        max_connections=max_connections,
        max_idle=max_idle,
        keepalive_expiry=expiry,
        clock=clock,
    )


def open_conns(pool: OriginPool[FakeConn], *names: str) -> list[FakeConn]:
    conns = []
    for name in names:
        assert pool.reserve()
        conn = FakeConn(pool, name)
        pool.connections.add(conn)
        conns.append(conn)
    return conns


def test_idle_connections_are_taken_last_in_first_out() -> None:
    clock = FakeClock()
    pool = make_pool(clock)
    a, b, c = open_conns(pool, "a", "b", "c")
    for conn in (a, b, c):
        pool.release(conn)
    assert repr(pool) == "<OriginPool http://backend:80 [active: 0, idle: 3, queued: 0]>"
    assert [pool.take_idle(), pool.take_idle(), pool.take_idle(), pool.take_idle()] == [
        c,
        b,
        a,
        None,
    ]
    assert repr(pool) == "<OriginPool http://backend:80 [active: 3, idle: 0, queued: 0]>"


def test_expired_idle_connections_are_closed_on_take() -> None:
    clock = FakeClock()
    pool = make_pool(clock, expiry=10)
    old, fresh = open_conns(pool, "old", "fresh")
    pool.release(old)
    clock.now += 8
    pool.release(fresh)
    clock.now += 5  # old: idle 13 s, fresh: 5 s
    assert pool.take_idle() is fresh
    pool.release(fresh)
    clock.now += 11
    assert pool.take_idle() is None
    assert old.closed and fresh.closed
    assert pool.size == 0 and not pool.connections


def test_release_closes_one_expired_connection_from_the_old_end() -> None:
    clock = FakeClock()
    pool = make_pool(clock, expiry=10)
    a, b, c = open_conns(pool, "a", "b", "c")
    pool.release(a)
    pool.release(b)
    clock.now += 11
    pool.release(c)  # a is past expiry: closed in passing, b is next in line
    assert a.closed and not b.closed
    assert list(pool.idle) == [b, c]


def test_prune_closes_every_expired_connection() -> None:
    clock = FakeClock()
    pool = make_pool(clock, expiry=10)
    a, b, c = open_conns(pool, "a", "b", "c")
    pool.release(a)
    pool.release(b)
    clock.now += 6
    pool.release(c)
    clock.now += 6
    pool.prune()
    assert (a.closed, b.closed, c.closed) == (True, True, False)
    assert list(pool.idle) == [c] and pool.size == 1


def test_each_connection_expires_after_its_own_keepalive() -> None:
    """A backend's Keep-Alive: timeout lowers one connection's idle time, not its neighbours'."""
    clock = FakeClock()
    pool = make_pool(clock, expiry=4)
    short, default = open_conns(pool, "short", "default")
    short.keepalive = 0.5
    pool.release(default)
    pool.release(short)
    clock.now += 0.6
    assert pool.take_idle() is default  # short was taken first (LIFO), found expired, closed
    assert short.closed and not default.closed
    pool.release(default)
    short2 = open_conns(pool, "short2")[0]
    short2.keepalive = 1
    pool.release(short2)
    clock.now += 1.5
    pool.prune()  # not sorted by expiry now: every expired one goes, wherever it is
    assert short2.closed and list(pool.idle) == [default]


def test_idle_beyond_max_idle_closes_the_oldest() -> None:
    clock = FakeClock()
    pool = make_pool(clock, max_idle=2)
    a, b, c = open_conns(pool, "a", "b", "c")
    for conn in (a, b, c):
        pool.release(conn)
    assert a.closed and list(pool.idle) == [b, c] and pool.size == 2


def test_connection_closed_while_idle_leaves_at_once() -> None:
    clock = FakeClock()
    pool = make_pool(clock)
    a, b = open_conns(pool, "a", "b")
    pool.release(a)
    pool.release(b)
    a.close()  # the backend closed it: connection_lost
    assert list(pool.idle) == [b] and pool.size == 1 and pool.connections == {b}


def test_slots_are_bounded() -> None:
    pool = make_pool(FakeClock(), max_connections=2)
    assert pool.reserve() and pool.reserve()
    assert not pool.reserve()
    pool.free_slot()
    assert pool.reserve()


async def test_waiters_are_served_first_in_first_out() -> None:
    loop = asyncio.get_running_loop()
    pool = make_pool(FakeClock(), max_connections=1)
    (conn,) = open_conns(pool, "a")
    first: asyncio.Future[FakeConn | None] = loop.create_future()
    gone: asyncio.Future[FakeConn | None] = loop.create_future()
    second: asyncio.Future[FakeConn | None] = loop.create_future()
    pool.waiters.extend([first, gone, second])
    gone.cancel()  # a waiter that timed out or was cancelled is skipped
    assert pool.queued == 2

    pool.release(conn)  # a released connection goes straight to the oldest waiter
    assert first.result() is conn and not pool.idle
    conn.close()  # its slot goes to the next live waiter, which opens a connection
    assert second.result() is None
    assert pool.size == 1 and not pool.waiters


async def test_close_fails_waiters_and_hands_back_connections() -> None:
    pool = make_pool(FakeClock(), max_connections=1)
    (conn,) = open_conns(pool, "a")
    waiter: asyncio.Future[FakeConn | None] = asyncio.get_running_loop().create_future()
    pool.waiters.append(waiter)
    assert pool.close(lambda: RuntimeError("closed")) == [conn]
    with pytest.raises(RuntimeError):
        waiter.result()
    pool.release(conn)  # after close, released connections are closed, not kept
    assert conn.closed and pool.size == 0


@pytest.mark.parametrize("grant", ["slot", "connection", "timeout"])
async def test_a_waiter_cancelled_after_its_grant_passes_it_on(grant: str) -> None:
    transport = Transport(max_connections_per_origin=1)
    request = httpx.Request("GET", "http://backend/")
    pool = transport._open_pool((b"http", b"backend", 80))
    (conn,) = open_conns(pool, "a")  # type: ignore[arg-type]
    task = asyncio.create_task(transport._wait(pool, request, 0.5))
    await asyncio.sleep(0)  # queued
    assert pool.queued == 1
    if grant == "slot":
        conn.close()  # the slot passes to the waiter...
    elif grant == "connection":
        pool.release(conn)  # type: ignore[arg-type]  # ...or the connection itself
    task.cancel()  # ...whose task is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pool.waiters
    if grant == "slot":
        assert pool.size == 0
    else:
        assert pool.size == 1 and conn.pooled is (grant == "connection")
    await transport.aclose()


async def test_limits_lower_the_cap_and_bound_the_queue() -> None:
    pool = make_pool(FakeClock(), max_connections=10)
    pool.limit(Limits(max_connections=1, max_pending=1))
    assert pool.reserve() and not pool.reserve()
    assert not pool.overflows()  # nobody waits yet: one may
    pool.waiters.append(asyncio.get_running_loop().create_future())
    assert pool.overflows()
    pool.limit(None)  # lifted: the transport's own cap, no bound on the queue
    assert pool.max_connections == 10 and pool.max_pending is None and not pool.overflows()


async def test_raising_the_cap_grants_slots_to_waiters_at_once() -> None:
    loop = asyncio.get_running_loop()
    pool = make_pool(FakeClock(), max_connections=10)
    pool.limit(Limits(max_connections=1))
    open_conns(pool, "a")
    waiters: list[asyncio.Future[FakeConn | None]] = [loop.create_future() for _ in range(3)]
    pool.waiters.extend(waiters)
    pool.limit(Limits(max_connections=3))
    assert [w.done() for w in waiters] == [True, True, False]
    assert waiters[0].result() is None and pool.size == 3 and pool.queued == 1


def test_a_connection_is_retired_after_max_requests() -> None:
    pool = make_pool(FakeClock())
    pool.limit(Limits(max_requests=2))
    (conn,) = open_conns(pool, "a")
    conn.exchanges = 1
    pool.release(conn)
    assert pool.take_idle() is conn
    conn.exchanges = 2
    pool.release(conn)  # its second exchange: closed, its slot freed
    assert conn.closed and not pool.idle and pool.size == 0


async def test_transport_refuses_at_once_beyond_max_pending() -> None:
    transport = Transport()
    origin = (b"http", b"backend", 80)
    transport.set_limits({origin: Limits(max_connections=1, max_pending=1)})
    pool = transport._open_pool(origin)
    open_conns(pool, "a")  # type: ignore[arg-type]
    waiting = asyncio.create_task(transport._acquire(pool, origin, None, 5.0, 1.0))
    await asyncio.sleep(0)
    assert transport.load(origin) == (1, 1)
    with pytest.raises(PoolOverflow) as caught:
        await transport._acquire(pool, origin, None, 5.0, 1.0)
    assert isinstance(caught.value, httpx.PoolTimeout) and not request_sent(caught.value)
    transport.set_limits({})  # lifted on a live pool
    assert pool.max_connections == 1000 and pool.max_pending is None
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await transport.aclose()


def test_lowering_the_cap_closes_idle_connections_above_it() -> None:
    pool = make_pool(FakeClock())
    a, b, c = open_conns(pool, "a", "b", "c")
    pool.release(a)
    pool.release(b)  # c stays busy
    pool.limit(Limits(max_connections=2))
    assert a.closed and not b.closed and list(pool.idle) == [b] and pool.size == 2
    pool.limit(Limits(max_connections=1))
    assert b.closed and not pool.idle and pool.size == 1 and not c.closed


async def test_a_check_may_go_past_the_cap_and_its_connection_then_closes() -> None:
    loop = asyncio.get_running_loop()
    pool = make_pool(FakeClock())
    pool.limit(Limits(max_connections=1))
    (busy,) = open_conns(pool, "busy")
    assert not pool.reserve() and pool.reserve(limited=False)  # a health check's own slot
    check = FakeConn(pool, "check")
    pool.connections.add(check)
    waiter: asyncio.Future[FakeConn | None] = loop.create_future()
    pool.waiters.append(waiter)
    pool.release(check)  # one too many: closed, and its slot is not passed on
    assert check.closed and not waiter.done() and pool.size == 1
    pool.release(busy)  # within the cap: straight to the waiter
    assert waiter.result() is busy and not busy.closed
