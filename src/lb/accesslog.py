"""The access log: one line per request (JSON by default), written from the request's context.

Fields (SPEC section 10): time (UTC, ms), request_id, client_ip, method, path (raw target, query
included), status (0: no response, the client left first), bytes_sent (body bytes), duration_ms,
pool, backend, attempts, cache, host and user_agent (as sent, null when absent), bytes_received
(request body bytes read), upstream_ms (until the last try's response head; null when no backend
answered), worker (the pid of the process that served it: workers of one instance tell apart);
plus error (the cause, when the balancer answered itself or broke off) and trace_id (from a valid
W3C traceparent) when present. `format: text` writes the same
fields as logfmt.

Lines are written straight to the app's own stream rather than through the `logging` module: its
loggers are process-global, and two apps in one process must not share a log destination. They
are written in batches, within `FLUSH_INTERVAL` of the request's end (see `AccessLog`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from json.encoder import encode_basestring_ascii as _str  # what json.dumps uses for a str
from typing import IO

from lb.config import LoggingConfig
from lb.proxy.context import RequestContext

FLUSH_INTERVAL = 0.1  # seconds a line may wait to be written
MAX_PENDING = 512  # lines; more are written at once

_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = b"0" * 32


def _trace_id(traceparent: bytes | None) -> str | None:
    """The trace id of a W3C `traceparent` (version-traceid-parentid-flags), None if invalid.

    The header itself goes to the backend untouched whatever it holds; only a well-formed id (32
    lower-case hex digits, not all zero) is logged.
    """
    if not traceparent:
        return None
    parts = traceparent.strip().split(b"-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == b"ff":
        return None
    trace = parts[1]
    if len(trace) != 32 or trace == _ZERO_TRACE or not _HEX.issuperset(trace):
        return None
    return trace.decode("ascii")


def _text(record: dict[str, object]) -> str:
    """logfmt: key=value, values with spaces, quotes or `=` quoted as JSON strings, None as -."""
    out = []
    for key, value in record.items():
        if value is None:
            text = "-"
        else:
            text = str(value)
            if not text or any(c in text for c in ' "=\\') or not text.isprintable():
                text = json.dumps(text)
        out.append(f"{key}={text}")
    return " ".join(out)


class AccessLog:
    """Writes access-log lines for one app to stdout or to `logging.file` (one stream per app).

    Lines are collected and written in batches, whole lines only, at most `FLUSH_INTERVAL`
    seconds after they were made (or once `MAX_PENDING` are waiting, or on close): one write
    per batch instead of one per request. A batch is a single write to a file opened for
    appending, so several workers logging to one file never interleave within a line.
    """

    def __init__(self, config: LoggingConfig) -> None:
        self.enabled = config.access_log
        self.json = config.format == "json"
        self._owned: IO[str] | None = None
        self._stream: IO[str] = sys.stdout
        self._path = config.file if self.enabled else None
        if self._path:
            self._owned = self._stream = open(self._path, "a", encoding="utf-8")
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._ms = -1  # the millisecond `_now_text` was formatted for
        self._now_text = ""
        self._second = -1  # the whole second `_stamp` was formatted for
        self._stamp = ""
        self.worker = os.getpid()  # the app may be made before a fork: `Runtime.start` resets it

    def close(self) -> None:
        self.flush()
        if self._owned is not None:
            self._owned.close()
            self._owned = None
            self.enabled = False

    def reopen(self) -> None:
        """Write what is pending, then go on in a new file of the configured name (SIGUSR1, after
        logrotate renamed the old one). Raises OSError when it cannot be opened; lines then
        keep going to the old file."""
        self.flush()
        if self._owned is None or not self._path:
            return
        new = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 - kept until close()
        old, self._owned, self._stream = self._owned, new, new
        old.close()

    def flush(self) -> None:
        """Write the pending lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self._pending
        if pending:
            self._pending = []
            stream = self._stream
            stream.write("".join(pending))
            stream.flush()

    def write(self, ctx: RequestContext, end: float, traceparent: bytes | None = None) -> None:
        if not self.enabled:
            return
        if self.json:
            line = self._json_line(ctx, end, traceparent)
        else:
            line = _text(self.record(ctx, end, traceparent)) + "\n"
        pending = self._pending
        pending.append(line)
        if len(pending) >= MAX_PENDING:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not in a request (a tool, a test): no batching
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    def record(
        self, ctx: RequestContext, end: float, traceparent: bytes | None = None
    ) -> dict[str, object]:
        """The fields of one line, in order (what the JSON line holds)."""
        record: dict[str, object] = {
            "time": self._now(),
            "request_id": ctx.request_id.decode("ascii"),
            "client_ip": ctx.client_ip,
            "method": ctx.method,
            "path": ctx.target.decode("latin-1"),
            "status": ctx.status,
            "bytes_sent": ctx.bytes_sent,
            "duration_ms": round((end - ctx.start) * 1000.0, 3),
            "pool": ctx.pool,
            "backend": ctx.backend,
            "attempts": ctx.attempts,
            "cache": ctx.cache,
            "host": _latin1(ctx.host),
            "user_agent": _latin1(ctx.user_agent),
            "bytes_received": ctx.bytes_received,
            "upstream_ms": None if ctx.upstream is None else round(ctx.upstream * 1000.0, 3),
            "worker": self.worker,
        }
        if ctx.error:
            record["error"] = ctx.error
        trace_id = _trace_id(traceparent)
        if trace_id:
            record["trace_id"] = trace_id
        return record

    def _json_line(self, ctx: RequestContext, end: float, traceparent: bytes | None) -> str:
        """What `json.dumps(self.record(...), separators=(",", ":"))` says, and a newline, without
        the dict and the generic encoder: each string is escaped by the encoder's own C function,
        and duration_ms is written with its three decimals ("1.500" for 1.5). Integers are
        formatted without a `:d` spec, which costs twice as much."""
        host, agent, upstream = ctx.host, ctx.user_agent, ctx.upstream
        line = (
            f'{{"time":"{self._now()}","request_id":{_str(ctx.request_id.decode("ascii"))},'
            f'"client_ip":{_str(ctx.client_ip)},"method":{_str(ctx.method)},'
            f'"path":{_str(ctx.target.decode("latin-1"))},"status":{ctx.status},'
            f'"bytes_sent":{ctx.bytes_sent},'
            f'"duration_ms":{(end - ctx.start) * 1000.0:.3f},'
            f'"pool":{_opt(ctx.pool)},"backend":{_opt(ctx.backend)},'
            f'"attempts":{ctx.attempts},"cache":{_opt(ctx.cache)},'
            f'"host":{"null" if host is None else _str(host.decode("latin-1"))},'
            f'"user_agent":{"null" if agent is None else _str(agent.decode("latin-1"))},'
            f'"bytes_received":{ctx.bytes_received},'
            f'"upstream_ms":{"null" if upstream is None else f"{upstream * 1000.0:.3f}"},'
            f'"worker":{self.worker}'
        )
        if ctx.error:
            line += f',"error":{_str(ctx.error)}'
        if traceparent is not None:
            trace_id = _trace_id(traceparent)
            if trace_id:
                line += f',"trace_id":"{trace_id}"'
        return line + "}\n"

    def _now(self) -> str:
        """UTC time with milliseconds, formatted at most once a millisecond."""
        ms = int(time.time() * 1000)
        if ms != self._ms:
            self._ms = ms
            second, fraction = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._now_text = f"{self._stamp}.{fraction:03d}Z"
        return self._now_text


def _opt(value: str | None) -> str:
    return "null" if value is None else _str(value)


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
