"""Bounded fuzz runs (hypothesis, a fixed number of examples each): the config loader on raw YAML
text, the header filter on arbitrary bytes, and a real balancer on random request heads.

Whatever comes in: the loader says ConfigError or gives a Config, the filter never raises nor
lets a hop-by-hop header or a control character through, and the balancer answers every head
with a response of its own rules (forwarded once, or refused with 400/414/431), never a 500.
"""

from __future__ import annotations

import itertools
import socket
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import pool_config
from lb.config import Config, ConfigError, load_config
from lb.proxy.headers import HOP_BY_HOP, downstream_response_headers, upstream_request_headers
from rawbackend import RawBackend, counting

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the config loader on YAML text ----------------------------------------------------------

FRAGMENTS = [
    "pools:", "web:", "backends:", "- ", "url: ", "http://127.0.0.1:9001", "weight: ",
    "strategy: ", "round_robin", "consistent_hash", "health_check:", "interval: ", "5s",
    "250ms", "timeouts:", "read: ", "rate_limit:", "rate: ", "burst: ", "cache:", "max_bytes: ",
    "64KiB", "routes:", "pool: ", "path_prefix: /", "host: ", "admin:", "allow: ", "[", "]",
    "{", "}", ", ", "  ", "\n", "\t", "'", '"', "&a ", "*a", "<<: ", "!!python/object ",
    "${LB_X}", "-1", "1e999", ".nan", "~", "null", "true", "0x10", "%YAML 1.1\n", "---\n",
    "\u00e9", "\x00", "\ufeff", ":", "#",
]  # fmt: skip
yaml_texts = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.text(max_size=200),
)


@FUZZ
@given(yaml_texts)
def test_config_loader_on_yaml_text(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    try:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    except UnicodeEncodeError:
        return
    try:
        config = load_config(str(path))
    except ConfigError as exc:
        assert exc.problems and all(
            "\n" not in p and "internal error" not in p for p in exc.problems
        )
    else:
        assert isinstance(config, Config)


# -- the header filter on any bytes ----------------------------------------------------------

any_headers = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(sorted(HOP_BY_HOP | {b"host", b"x-request-id"})), st.binary(max_size=12)
        ),  # noqa: E501
        st.binary(max_size=30),
    ),
    max_size=10,
)


@FUZZ
@given(any_headers, st.booleans())
def test_header_filter_on_any_bytes(headers: list[tuple[bytes, bytes]], trusted: bool) -> None:
    out = upstream_request_headers(
        headers,
        peer="192.0.2.1",
        scheme="http",
        request_id=b"r",
        host=None,
        fallback_host=b"b:80",
        peer_trusted=trusted,
    )
    assert all(n not in HOP_BY_HOP or (n, v) == (b"transfer-encoding", b"chunked") for n, v in out)
    back = downstream_response_headers(headers, b"r")
    assert all(n.lower() not in HOP_BY_HOP for n, _ in back)


# -- a real balancer on random request heads -------------------------------------------------

LINE_BYTES = st.sampled_from(
    [b"a", b"Z", b"0", b"-", b":", b" ", b"\t", b"\r", b"\n", b"\x00", b"\x7f", b"\xe9", b",",
     b";", b"=", b'"', b"chunked", b"Content-Length", b"Transfer-Encoding", b"Host", b"\r\n"]
)  # fmt: skip
garbage_lines = st.lists(LINE_BYTES, max_size=12).map(b"".join)
NAMES = [b"Content-Length", b"Transfer-Encoding", b"Host", b"Connection", b"X-Request-ID",
         b"X-Forwarded-For", b"Upgrade", b"TE", b"Keep-Alive", b"Expect", b"X-A"]  # fmt: skip
VALUE_BYTES = st.sampled_from(
    [b"0", b"5", b"-1", b"chunked", b"identity", b"close", b"keep-alive", b"x-a", b"host",
     b"100-continue", b"websocket", b",", b" ", b"\t", b"\xe9", b"a", b"10.0.0.1", b"\r", b"\x00"]
)  # fmt: skip
field_lines = st.builds(
    lambda name, sep, value: name + sep + value,
    st.one_of(st.sampled_from(NAMES), st.binary(min_size=1, max_size=6)),
    st.sampled_from([b": ", b":", b" : ", b":\t"]),
    st.lists(VALUE_BYTES, max_size=5).map(b"".join),
)
header_lines = st.one_of(field_lines, field_lines, garbage_lines)
NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def fuzzed(module_balancer):  # type: ignore[no-untyped-def]
    backend = RawBackend(counting).start()
    lb = module_balancer(pool_config([backend.url]))
    yield backend, lb
    backend.stop()


def first_response(port: int, data: bytes) -> int:
    """The status of the first response to `data` on a new connection; 0 if the balancer closed
    the connection without one, or said nothing for a moment (a request still awaiting its
    body, which the client then abandons)."""
    statuses: list[int] = []

    class Callbacks:
        def on_headers_complete(self) -> None:
            if parser.get_status_code() >= 200:  # not an interim 100 Continue
                statuses.append(parser.get_status_code())

    parser = httptools.HttpResponseParser(Callbacks())
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(data)
        sock.settimeout(0.3)
        while not statuses:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            parser.feed_data(chunk)
    return statuses[0] if statuses else 0


@FUZZ
@given(st.lists(header_lines, max_size=6), st.sampled_from([b"GET", b"POST", b"PUT"]))
def test_balancer_on_random_request_heads(fuzzed: Any, lines: list[bytes], method: bytes) -> None:
    backend, lb = fuzzed
    target = b"/fuzz/%d" % next(NUMBERS)  # tells this example's requests from earlier ones'
    head = method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
    status = first_response(lb.port, head + b"".join(l + b"\r\n" for l in lines) + b"\r\n")  # noqa: E741
    forwarded = [r for r in backend.requests if r["url"] == target]
    event(f"status {status}")
    # Refused at the edge, or forwarded exactly once (a 200 from the counting backend); a
    # request whose body never came may be cut off (0) or time out upstream, never crash lb.
    assert status in (0, 200, 400, 413, 414, 431, 502, 504), (status, head)
    assert len(forwarded) <= 1
    if status == 400:
        assert not forwarded
    for request in forwarded:
        for name, value in request["headers"]:
            assert name not in HOP_BY_HOP or (name, value) == (b"transfer-encoding", b"chunked")
            assert not set(value) & {0, 10, 13}


# -- a real balancer on random backend answers ---------------------------------------------------

STATUS_LINES = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified",
     b"HTTP/1.1 404 Not Found", b"HTTP/1.1 599 X", b"HTTP/1.1 600 X", b"HTTP/1.1 999 Weird",
     b"HTTP/1.1 099 X", b"HTTP/1.1 000 X", b"HTTP/1.0 200 OK", b"HTTP/2.0 200 OK",
     b"HTTP/1.1 200", b"HTTP/1.1 2000 OK", b"HTTP/1.1 200 O\rK", b"HTTP/1.1  200 OK", b"HTTP/1.1",
     b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK",
     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", b"ok"]
)  # fmt: skip
RESPONSE_FIELDS = st.sampled_from(
    [b"Content-Length: 0", b"Content-Length: 2", b"Content-Length: 5", b"Content-Length: -1",
     b"Content-Length: 2, 2", b"Content-Length: 99999999999999999999", b"Content-Length:2",
     b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Transfer-Encoding: gzip, chunked",
     b"Transfer-Encoding: chunked, gzip", b"Connection: close", b"Connection: keep-alive",
     b"Keep-Alive: timeout=0", b"Keep-Alive: timeout=x", b"Set-Cookie: a=1", b"X-A: a\rb",
     b"X-A:\tb ", b" X-Folded: b", b"X A: b", b"X-A: \x00", b"X-A: \xe9", b"Content-Type: text/x"]
)  # fmt: skip
BODIES = st.sampled_from(
    [b"", b"ok", b"hello", b"2\r\nok\r\n0\r\n\r\n", b"2\r\nok\r\n", b"zz\r\nok\r\n0\r\n\r\n",
     b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled", b"x" * 70_000]
)  # fmt: skip
ENDINGS = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"])  # mostly well-formed lines
answers = st.builds(
    lambda line, fields, end, body: line + end + b"".join(f + end for f in fields) + end + body,
    STATUS_LINES,
    st.lists(RESPONSE_FIELDS, max_size=5),
    ENDINGS,
    BODIES,
)


class Scripted:
    """A backend that sends the current example's answer, then closes its side (so an answer
    delimited by the close, or cut short, ends instead of waiting)."""

    def __init__(self) -> None:
        self.answer = b""

    def __call__(self, conn: socket.socket, backend: RawBackend) -> None:
        if backend.read_head(conn) is not None:
            conn.sendall(self.answer)
            conn.shutdown(socket.SHUT_WR)
            backend.wait_closed(conn)


@pytest.fixture(scope="module")
def answering(module_balancer):  # type: ignore[no-untyped-def]
    script = Scripted()
    backend = RawBackend(script).start()
    timeouts = {"connect": "1s", "read": "1s", "pool": "1s"}
    lb = module_balancer(pool_config([backend.url], timeouts=timeouts, retries={"attempts": 1}))
    yield script, lb
    backend.stop()


def final_response(port: int) -> tuple[int, bool]:
    """(status of the final response, whether it ended cleanly) for a GET on a new connection;
    (0, False) when the balancer closed the connection without a response head."""
    state = {"final": 0, "complete": False}

    class Callbacks:
        def on_headers_complete(self) -> None:
            if parser.get_status_code() >= 200:
                state["final"] = parser.get_status_code()

        def on_message_complete(self) -> None:
            state["complete"] = state["final"] != 0

    parser = httptools.HttpResponseParser(Callbacks())
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(b"GET /fuzz HTTP/1.1\r\nHost: x\r\n\r\n")
        while not state["complete"]:
            chunk = sock.recv(65536)  # the 5 s socket timeout fails a hang
            if not chunk:
                break
            parser.feed_data(chunk)
    return state["final"], bool(state["complete"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_balancer_on_random_backend_answers(answering: Any, answer: bytes) -> None:
    """Whatever the backend answers, the client gets a response head from lb within the read
    timeout (a 502 of lb's own, or the backend's head), never an empty reply or a hang."""
    script, lb = answering
    script.answer = answer
    status, complete = final_response(lb.port)
    event(f"status {status}" + ("" if complete else ", cut short"))
    assert 200 <= status <= 599, answer
    if not complete:
        assert status not in (204, 304), answer  # bodiless: nothing to cut short
