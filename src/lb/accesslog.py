"""The access log: one line per request (JSON by default), written from the request's context.

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


def _trace_id(traceparent: bytes | None) -> str | None:
    # W3C traceparent: version-traceid-parentid-flags; the trace id is the second field.
    if not traceparent:
        return None
    parts = traceparent.split(b"-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1].decode("latin-1")
    return None


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
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
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
            line = " ".join(f"{k}={v}" for k, v in record.items())
        stream = self._stream
        stream.write(line + "\n")
        if stream is sys.stdout:
            stream.flush()
