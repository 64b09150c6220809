"""Real origin servers other than uvicorn, as subprocesses on free loopback ports: Node's http
module and gunicorn's threaded worker, each with a short keep-alive timeout, each recording every
request it reads (method, target, body) and listing them at `GET /_seen`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from programs import program
from servers import free_port, wait_for_port

NODE_ORIGIN = """
const http = require("http");
const seen = [];
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    let body = "ok";
    if (req.url === "/_seen") {
      body = JSON.stringify(seen);
    } else {
      seen.push([req.method, req.url, Buffer.concat(chunks).toString("latin1")]);
    }
    res.writeHead(200, {"content-type": "text/plain", "content-length": Buffer.byteLength(body)});
    res.end(body);
  });
});
server.keepAliveTimeout = Number(process.env.KEEPALIVE_MS);
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
"""


class Origin:
    """A started origin subprocess: `.url`, `.seen()`, `.stop()`."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def seen(self) -> list[tuple[str, str, str]]:
        """(method, target, body) of every request it read, in order."""
        return [tuple(r) for r in httpx.get(self.url + "/_seen").json()]  # type: ignore[misc]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_node(keepalive_ms: int) -> Origin:
    """Node's http server with `server.keepAliveTimeout = keepalive_ms` (it then sends
    `Keep-Alive: timeout=N`, N in whole seconds)."""
    env = {**os.environ, "KEEPALIVE_MS": str(keepalive_ms)}
    process = subprocess.Popen(
        [program("node"), "-e", NODE_ORIGIN], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return Origin(process, port)


def start_gunicorn(keepalive_s: int) -> Origin:
    """gunicorn's gthread worker (the sync worker does not keep connections alive) with
    `--keep-alive keepalive_s`, serving a `Recorder`."""
    port = free_port()
    tests = str(Path(__file__).resolve().parent)
    args = [sys.executable, "-m", "gunicorn", "origins:Recorder()", "--chdir", tests]
    args += ["-k", "gthread", "--threads", "8", "-w", "1", "-b", f"127.0.0.1:{port}"]
    args += ["--keep-alive", str(keepalive_s), "--log-level", "warning"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, text=True)
    wait_for_port(port, 20)
    return Origin(process, port)


class Recorder:
    """The WSGI app gunicorn serves: records each request, answers `ok`, lists them at /_seen."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        target = environ["PATH_INFO"]
        if target == "/_seen":
            with self.lock:
                body = json.dumps(self.seen).encode()
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = environ["wsgi.input"].read(length).decode("latin-1")
            with self.lock:
                self.seen.append((environ["REQUEST_METHOD"], target, data))
            body = b"ok"
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]
