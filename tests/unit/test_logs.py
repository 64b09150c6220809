"""Access-log formatting, trace ids, and lb's own logger set-up."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.accesslog import AccessLog, _text, _trace_id
from lb.config import LoggingConfig
from lb.logsetup import JsonFormatter, log_config, use_level
from lb.proxy.context import RequestContext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f" 00-{TRACE}-00f067aa0ba902b7-00 ", TRACE),
        (f"01-{TRACE}-00f067aa0ba902b7-01-future", TRACE),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),  # must be lower-case hex
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero id is invalid
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),  # version ff is invalid
        ("00-abc-00f067aa0ba902b7-01", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_trace_id(header: str, expected: str | None) -> None:
    assert _trace_id(header.encode()) == expected


def test_text_format_quotes_what_would_break_a_logfmt_parser() -> None:
    line = _text({"a": 1, "b": None, "c": "x y", "d": 'q"', "e": "k=v", "f": "plain", "g": ""})
    assert line == 'a=1 b=- c="x y" d="q\\"" e="k=v" f=plain g=""'


def _ctx() -> RequestContext:
    ctx = RequestContext(b"rid1", "10.0.0.1", False, "GET", b"/a?b=1", None, time.perf_counter())
    ctx.status, ctx.bytes_sent, ctx.pool, ctx.backend, ctx.attempts = 200, 5, "web", "b1", 1
    return ctx


def test_json_line_has_every_spec_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "access.log"
    log = AccessLog(LoggingConfig(file=str(path)))
    ctx = _ctx()
    log.write(ctx, ctx.start + 0.0125, f"00-{TRACE}-00f067aa0ba902b7-01".encode())
    log.close()
    (line,) = path.read_text().splitlines()
    record = json.loads(line)
    assert list(record)[:12] == [
        "time", "request_id", "client_ip", "method", "path", "status", "bytes_sent",
        "duration_ms", "pool", "backend", "attempts", "cache",
    ]  # fmt: skip
    assert record["time"].endswith("Z") and len(record["time"]) == len("2024-01-01T00:00:00.000Z")
    assert record["duration_ms"] == 12.5
    assert record["path"] == "/a?b=1" and record["trace_id"] == TRACE
    assert record["worker"] == os.getpid()  # which worker of the instance served it
    assert "error" not in record


def test_text_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "access.log"
    log = AccessLog(LoggingConfig(file=str(path), format="text"))
    ctx = _ctx()
    ctx.error = "connect_error (refused)"
    log.write(ctx, ctx.start)
    log.close()
    line = path.read_text()
    assert 'method=GET path="/a?b=1" status=200' in line
    assert f'upstream_ms=- worker={os.getpid()} error="connect_error (refused)"' in line


def test_use_level_leaves_a_host_configured_level_alone() -> None:
    logger = logging.getLogger("lb")
    saved = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        use_level("warning")
        assert logger.level == logging.WARNING
        use_level("debug")  # set already (by us or the host): kept
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(saved)


def test_log_config_routes_lb_loggers_at_the_configured_level() -> None:
    config = log_config(LoggingConfig(level="debug", format="json"))
    assert config["loggers"]["lb"] == {"handlers": ["lb"], "level": "DEBUG", "propagate": False}
    assert "uvicorn.error" in config["loggers"]  # uvicorn's own set-up is kept
    text = log_config(LoggingConfig(format="text"))
    assert "format" in text["formatters"]["lb"]


@pytest.mark.parametrize("name", ["lb", "default"])
def test_text_lines_carry_the_pid(name: str) -> None:
    """lb's lines and uvicorn's ("Application startup complete") tell the workers apart."""
    import logging.config

    config = log_config(LoggingConfig(format="text"))
    spec = dict(config["formatters"][name])
    factory = spec.pop("()", logging.Formatter)
    if "format" in spec:
        spec["fmt"] = spec.pop("format")
    if isinstance(factory, str):
        module, _, attr = factory.rpartition(".")
        factory = getattr(__import__(module, fromlist=[attr]), attr)
    formatter = factory(**spec)
    record = logging.LogRecord("lb.health", logging.WARNING, __file__, 1, "down", (), None)
    assert f"[pid {os.getpid()}]" in formatter.format(record)


def test_json_formatter() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    record = logging.LogRecord("lb.proxy", logging.WARNING, __file__, 1, "x=%s", ("1",), None)
    handler.emit(record)
    out = json.loads(stream.getvalue())
    assert out["level"] == "warning" and out["logger"] == "lb.proxy" and out["message"] == "x=1"
    assert out["pid"] == os.getpid()


@given(
    request_id=st.binary(min_size=1, max_size=40),
    client_ip=st.text(max_size=40),
    method=st.text(max_size=10),
    target=st.binary(max_size=60),
    status=st.integers(0, 599),
    sent=st.integers(0, 1 << 40),
    duration=st.floats(0, 1e5, allow_nan=False),
    pool=st.none() | st.text(max_size=10),
    backend=st.none() | st.text(max_size=10),
    cache=st.none() | st.sampled_from(["HIT", "MISS"]),
    error=st.none() | st.text(max_size=30),
    traceparent=st.none() | st.just(f"00-{TRACE}-00f067aa0ba902b7-01".encode()),
    host=st.none() | st.binary(max_size=20),
    user_agent=st.none() | st.binary(max_size=40),
    received=st.integers(0, 2**40),
    upstream=st.none() | st.floats(0, 1e4, allow_nan=False),
)
def test_the_json_line_is_what_json_dumps_makes(  # type: ignore[no-untyped-def]
    request_id, client_ip, method, target, status, sent, duration, pool, backend, cache, error,
    traceparent, host, user_agent, received, upstream,
) -> None:  # fmt: skip
    log = AccessLog(LoggingConfig(access_log=False))
    ctx = RequestContext(request_id.hex().encode(), client_ip, False, method, target, None, 1000.0)
    ctx.status, ctx.bytes_sent, ctx.pool, ctx.backend, ctx.cache = (
        status,
        sent,
        pool,
        backend,
        cache,
    )
    ctx.error, ctx.attempts = error, 2
    ctx.host, ctx.user_agent, ctx.bytes_received, ctx.upstream = (
        host,
        user_agent,
        received,
        upstream,
    )
    line = log._json_line(ctx, 1000.0 + duration, traceparent)
    expected = log.record(ctx, 1000.0 + duration, traceparent)
    parsed = json.loads(line)
    expected["time"] = parsed["time"]  # the clock moved on between the two calls
    assert line.endswith("}\n") and "\n" not in line[:-1]
    assert list(parsed.items()) == list(expected.items())


async def test_lines_are_batched_and_written_whole_soon_after(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "access.log"
    log = AccessLog(LoggingConfig(file=str(path)))
    ctx = _ctx()
    log.write(ctx, ctx.start)
    log.write(ctx, ctx.start)
    assert path.read_text() == ""  # not one write per request
    deadline = time.monotonic() + 5
    while not path.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [json.loads(line)["status"] for line in path.read_text().splitlines()] == [200, 200]
    log.write(ctx, ctx.start)
    log.close()  # writes what is pending
    assert len(path.read_text().splitlines()) == 3


def test_outside_an_event_loop_each_line_is_written_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "access.log"
    log = AccessLog(LoggingConfig(file=str(path)))
    ctx = _ctx()
    log.write(ctx, ctx.start)
    assert len(path.read_text().splitlines()) == 1
    log.close()
