"""Retry rules (which failures, which methods) and the retry budget over a fake clock."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from lb.config import RetryConfig
from lb.proxy.retry import PerTryTimeout, RetryBudget, RetryPolicy, was_sent


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def take(budget: RetryBudget, n: int) -> int:
    return sum(budget.try_acquire() for _ in range(n))


def test_budget_floor_is_three_retries_per_second() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, clock)
    assert take(budget, 10) == 3
    clock.now += 1.0
    assert take(budget, 10) == 3


def test_budget_allows_percent_of_requests_over_ten_seconds() -> None:
    clock = FakeClock()
    budget = RetryBudget(20.0, clock)
    for _ in range(100):
        budget.record_request()
    assert take(budget, 100) == 20
    clock.now += 5.0
    assert take(budget, 100) == 3  # the 20 are still in the window; only the floor is left
    for _ in range(50):
        budget.record_request()
    assert take(budget, 100) == 7  # 150 requests -> 30 in all; 23 used, the floor already spent


def test_budget_forgets_what_is_older_than_ten_seconds() -> None:
    clock = FakeClock()
    budget = RetryBudget(10.0, clock)
    for _ in range(1000):
        budget.record_request()
    assert take(budget, 1000) == 100
    clock.now += 10.0
    assert take(budget, 1000) == 3
    clock.now += 100.0
    for _ in range(100):
        budget.record_request()
    assert take(budget, 1000) == 10
    assert "10.0%" in repr(budget)


def test_a_retry_storm_is_capped_at_percent_plus_floor() -> None:
    clock = FakeClock()
    budget = RetryBudget(20.0, clock)
    retries = requests = 0
    for tick in range(2000):  # 200 requests/s for 10 s, every one failing and wanting a retry
        clock.now = 500.0 + tick * 0.005
        budget.record_request()
        requests += 1
        retries += budget.try_acquire()
    assert retries <= requests * 0.2 + 3 * 11
    assert retries >= requests * 0.2 - 1


def policy(*retry_on: str, attempts: int = 2, per_try: float | None = None) -> RetryPolicy:
    return RetryPolicy(RetryConfig(attempts, frozenset(retry_on), 20.0, per_try))


def sent_error(cls: type[httpx.HTTPError]) -> httpx.HTTPError:
    return cls("boom")


def unsent(exc: httpx.HTTPError) -> httpx.HTTPError:
    exc.request_sent = False  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("retry_on", "exc", "method", "started", "expected"),
    [
        # never sent: any method, as long as the body can be sent again
        (["connect_error"], httpx.ConnectError("refused"), "POST", False, True),
        (["connect_error"], httpx.ConnectError("refused"), "POST", True, False),
        ([], httpx.ConnectError("refused"), "GET", False, False),
        (["timeout"], httpx.ConnectTimeout("slow"), "POST", False, True),
        (["connect_error"], httpx.ConnectTimeout("slow"), "PATCH", False, True),
        (["connect_error"], unsent(httpx.RemoteProtocolError("closed")), "POST", False, True),
        (["connect_error"], unsent(httpx.ReadError("reset")), "POST", False, True),
        # no free connection to that backend: another one may have room
        (["connect_error"], httpx.PoolTimeout("full"), "POST", False, True),
        (["timeout"], httpx.PoolTimeout("full"), "GET", False, True),
        # a request the transport refuses to write: no backend would take it
        (["connect_error"], unsent(httpx.LocalProtocolError("CR in header")), "GET", False, False),
        (["502"], httpx.LocalProtocolError("body longer than Content-Length"), "GET", False, False),
        # the backend may have received it: idempotent only
        (["timeout"], httpx.ReadTimeout("slow"), "GET", False, True),
        (["timeout"], httpx.ReadTimeout("slow"), "POST", False, False),
        (["timeout"], httpx.ReadTimeout("slow"), "PUT", True, False),
        (["connect_error"], httpx.ReadTimeout("slow"), "GET", False, False),
        (["timeout"], PerTryTimeout("slow"), "DELETE", False, True),
        (["502"], httpx.RemoteProtocolError("closed"), "GET", False, True),
        (["502"], httpx.ReadError("reset"), "HEAD", False, True),
        (["502"], httpx.RemoteProtocolError("closed"), "POST", False, False),
        (["connect_error", "timeout"], httpx.RemoteProtocolError("closed"), "GET", False, False),
    ],
)
def test_which_errors_may_be_retried(
    retry_on: list[str], exc: httpx.HTTPError, method: str, started: bool, expected: bool
) -> None:
    assert policy(*retry_on).error_retryable(exc, method, started) is expected


def test_was_sent() -> None:
    assert not was_sent(httpx.ConnectError("x"))
    assert not was_sent(httpx.PoolTimeout("x"))
    assert was_sent(httpx.ReadError("x"))
    assert not was_sent(unsent(httpx.ReadError("x")))


def test_which_statuses_may_be_retried() -> None:
    rules = policy("502", "503")
    assert rules.status_retryable(503, "GET", False)
    assert rules.status_retryable(502, "OPTIONS", False)
    assert not rules.status_retryable(504, "GET", False)
    assert not rules.status_retryable(503, "POST", False)
    assert not rules.status_retryable(503, "PUT", True)


def test_take_spends_the_budget() -> None:
    clock = FakeClock()
    rules = RetryPolicy(RetryConfig(3, frozenset(), 0.0), RetryBudget(0.0, clock))
    assert [rules.take() for _ in range(5)] == [True, True, True, False, False]


class SlowTransport(httpx.AsyncBaseTransport):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay)
        return httpx.Response(200)


async def test_per_try_timeout_bounds_the_wait_for_the_response_head() -> None:
    rules = policy("timeout", per_try=0.05)
    request = httpx.Request("GET", "http://127.0.0.1:1/")
    start = time.monotonic()
    with pytest.raises(PerTryTimeout) as info:
        await rules.bounded(SlowTransport(5.0).handle_async_request(request), request)
    assert time.monotonic() - start < 1.0
    assert info.value.request is request
    assert (
        await rules.bounded(SlowTransport(0.0).handle_async_request(request))
    ).status_code == 200
    assert (
        await policy().bounded(SlowTransport(0.01).handle_async_request(request))
    ).status_code == 200


class Receive:
    """ASGI `receive` handing out `chunks` as http.request messages."""

    def __init__(self, *chunks: bytes) -> None:
        self.messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        self.calls = 0

    async def __call__(self) -> dict[str, object]:
        self.calls += 1
        return self.messages.pop(0)


async def test_a_small_body_is_sent_again_whole_after_a_partial_read() -> None:
    from lb.proxy.downstream import RequestBody

    done: list[bool] = []
    body = RequestBody(Receive(b"ab", b"cd", b"ef"), True, lambda: done.append(True))
    first = body.__aiter__()
    assert await first.__anext__() == b"ab"  # a transport took the first chunk, then failed
    assert body.started and body.replayable
    assert [c async for c in body] == [b"ab", b"cd", b"ef"]
    assert done == [True]
    assert [c async for c in body] == [b"ab", b"cd", b"ef"]  # and again, from what was kept
    assert done == [True]


async def test_a_body_over_the_replay_limit_cannot_be_sent_again() -> None:
    from lb.proxy.downstream import REPLAY_LIMIT, RequestBody

    big = b"x" * (REPLAY_LIMIT // 2 + 1)
    body = RequestBody(Receive(big, big), True, lambda: None)
    assert [len(c) async for c in body] == [len(big), len(big)]
    assert not body.replayable
    with pytest.raises(RuntimeError):
        [c async for c in body]


async def test_a_first_chunk_over_the_limit_is_kept_until_the_next_one_is_read() -> None:
    from lb.proxy.downstream import REPLAY_LIMIT, RequestBody

    big = b"x" * (REPLAY_LIMIT + 1)
    body = RequestBody(Receive(big, b"tail"), True, lambda: None)
    chunks = body.__aiter__()
    assert await chunks.__anext__() == big  # taken before a connect that failed
    assert body.replayable
    assert [len(c) async for c in body] == [len(big), 4]
    assert not body.replayable


async def test_no_body_is_always_replayable() -> None:
    from lb.proxy.downstream import RequestBody

    receive = Receive()
    body = RequestBody(receive, False, lambda: None)
    assert [c async for c in body] == [] and body.replayable and receive.calls == 0
