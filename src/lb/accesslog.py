"""The access log: one line per request (JSON by default), written from the request's context.

Fields (SPEC section 10): time (UTC, ms), request_id, client_ip, method, path (raw target, query
included), status (0: no response, the client left first), bytes_sent (body bytes), duration_ms,
pool, backend, attempts, cache; plus error (the cause, when the balancer answered itself or broke
off) and trace_id (from a valid W3C traceparent) when present. `format: text` writes the same
fields as logfmt.

Lines are written straight to the app's own stream rather than through the `logging` module: its
loggers are process-global, and two apps in one process must not share a log destination.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO

from lb.config import LoggingConfig
from lb.context import RequestContext

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


def _utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class AccessLog:
    """Writes access-log lines for one app to stdout or to `logging.file` (one stream per app)."""

    def __init__(self, config: LoggingConfig) -> None:
        self.enabled = config.access_log
        self.json = config.format == "json"
        self._owned: IO[str] | None = None
        self._stream: IO[str] = sys.stdout
        if self.enabled and config.file:
            # Line-buffered: each line is whole on disk once written (tail -f, log shippers).
            self._owned = self._stream = open(config.file, "a", buffering=1, encoding="utf-8")

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
            self.enabled = False

    def write(self, ctx: RequestContext, end: float, traceparent: bytes | None = None) -> None:
        if not self.enabled:
            return
        record = {
            "time": _utc_now(),
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
        }
        if ctx.error:
            record["error"] = ctx.error
        trace_id = _trace_id(traceparent)
        if trace_id:
            record["trace_id"] = trace_id
        if self.json:
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = _text(record)
        stream = self._stream
        stream.write(line + "\n")
        if stream is sys.stdout:
            stream.flush()
