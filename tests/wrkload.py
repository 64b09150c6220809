"""Load for reliability tests: `wrk` bounded by a request count, and nginx as a fast backend.

wrk runs for a duration; to stop it after N requests, each of its threads counts responses in
Lua, stops itself at its share, and leaves a marker file; once every thread has, wrk gets SIGINT
and prints its summary, which `WrkResult` parses.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from programs import program
from servers import free_port, wait_for_port, wait_until

_LUA = """
local paths = {%(paths)s}
local limit = %(limit)d
local unique_path = %(unique_path)s
local header = "%(header)s"
local prefix = "%(prefix)s"
local count = 0
local index = 0
local thread_id = 0
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

function init(args)
  thread_id = wrk.thread:get("thread_id")
  index = thread_id
end

function request()
  index = index + 1
  local path = paths[(index %% #paths) + 1]
  if not unique_path and header == "" then
    return wrk.format(nil, path)
  end
  -- A distinct target or header value on every request: floods of distinct keys.
  local id = thread_id .. "-" .. index
  local headers = {}
  if header ~= "" then
    headers[header] = prefix .. id
  end
  if unique_path then
    path = path .. id
  end
  return wrk.format(nil, path, headers)
end

function response(status, headers, body)
  count = count + 1
  if count == limit then
    wrk.thread:stop()
    local marker = io.open("%(markers)s/done-" .. thread_id, "w")
    marker:write(count)
    marker:close()
  end
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict[str, int]
    output: str

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @classmethod
    def parse(cls, output: str, seconds: float) -> WrkResult:
        done = re.search(r"(\d+) requests in", output)
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
        )
        socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
        if errors:
            socket_errors = dict(zip(socket_errors, map(int, errors.groups()), strict=True))
        return cls(
            requests=int(done.group(1)) if done else 0,
            seconds=seconds,
            non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
            socket_errors=socket_errors,
            output=output,
        )


def run_wrk(
    url: str,
    *,
    requests: int,
    connections: int,
    paths: Sequence[str] = ("/",),
    threads: int = 2,
    max_seconds: float = 600,
    unique_path: bool = False,
    header: str = "",
    prefix: str = "",
) -> WrkResult:
    """`requests` requests (at least; each thread stops at its share) over `connections`
    keep-alive connections, cycling through `paths`; fails after `max_seconds`.

    `unique_path`: each request's target is the path with a unique suffix appended. `header`:
    each request carries that header with `prefix` and a unique suffix as its value.
    """
    with tempfile.TemporaryDirectory() as markers:
        script = Path(markers) / "count.lua"
        quoted = ", ".join(f'"{p}"' for p in paths)
        limit = -(-requests // threads)
        script.write_text(
            _LUA
            % {
                "paths": quoted,
                "limit": limit,
                "markers": markers,
                "unique_path": "true" if unique_path else "false",
                "header": header,
                "prefix": prefix,
            }
        )
        args = [program("wrk"), f"-t{threads}", f"-c{connections}", f"-d{int(max_seconds)}s"]
        args += ["--timeout", "10s", "-s", str(script), url]
        started = time.monotonic()
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:

            def finished() -> bool:
                if process.poll() is not None:
                    return True
                return len(list(Path(markers).glob("done-*"))) >= threads

            wait_until(finished, timeout=max_seconds + 10, interval=0.05)
            seconds = time.monotonic() - started
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # wrk prints its summary and exits
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    return WrkResult.parse(output, seconds)


BIG_SIZE = 16384


class Nginx:
    """nginx serving fixed answers on `ports` (one server block each), from a generated config
    in its own directory: never the system's config, pid file or logs."""

    def __init__(self, count: int = 2) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.dir = tempfile.mkdtemp(prefix="lb-nginx-")
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        # /big: a 16 KiB static file, as the shared bench's backends serve it (sendfile, ETag,
        # Last-Modified), for measuring a body that does not come whole with its head.
        big = os.path.join(self.dir, "big.bin")
        with open(big, "wb") as f:
            f.write((b"0123456789abcdef" * 1024)[:BIG_SIZE])
        # nginx's workers run as nobody when it is started as root: they must read the file.
        os.chmod(self.dir, 0o755)
        os.chmod(big, 0o644)
        servers = "\n".join(
            textwrap.dedent(
                f"""
                server {{
                    listen 127.0.0.1:{port} backlog=4096;
                    keepalive_requests 10000000;
                    keepalive_timeout 300s;
                    location = /health {{ return 200 "ok\\n"; }}
                    location /cache/ {{
                        add_header Cache-Control "max-age=60";
                        return 200 "cacheable from {i}\\n";
                    }}
                    location /vary/ {{
                        add_header Cache-Control "max-age=60";
                        add_header Vary "X-Variant";
                        return 200 "varies from {i}\\n";
                    }}
                    location /nocache/ {{
                        add_header Cache-Control "no-store";
                        return 200 "never stored from {i}\\n";
                    }}
                    location = /big {{ default_type application/octet-stream; alias {big}; }}
                    location / {{ return 200 "hello from {i}\\n"; }}
                }}"""
            )
            for i, port in enumerate(self.ports)
        )
        d = self.dir
        return (
            textwrap.dedent(
                f"""
            worker_processes 1;
            daemon off;
            pid {d}/nginx.pid;
            error_log {d}/error.log warn;
            events {{ worker_connections 8192; }}
            http {{
                access_log off;
                client_body_temp_path {d}/body;
                proxy_temp_path {d}/proxy;
                fastcgi_temp_path {d}/fastcgi;
                uwsgi_temp_path {d}/uwsgi;
                scgi_temp_path {d}/scgi;
                default_type text/plain;
            """
            )
            + textwrap.indent(servers, "    ")
            + "\n}\n"
        )

    def start(self) -> Nginx:
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(self.config())
        self.process = subprocess.Popen(
            [
                program("nginx"),
                "-p",
                self.dir,
                "-c",
                path,
                "-e",
                os.path.join(self.dir, "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in self.ports:
            wait_for_port(port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # nginx: SIGTERM is a fast shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
