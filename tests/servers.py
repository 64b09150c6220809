"""Real servers for tests: uvicorn in a thread on a free loopback port, and helpers to poll."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    def connectable() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    wait_until(connectable, timeout)


class ThreadedServer:
    """A uvicorn server running an ASGI app in a background thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "log_level": "warning",
            "lifespan": "on",
            "server_header": False,
            "date_header": False,
            "proxy_headers": False,
        }
        config_class = config.pop("config_class", uvicorn.Config)  # a uvicorn.Config subclass
        options.update(config)
        self.server = uvicorn.Server(config_class(app, **options))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    def start(self) -> ThreadedServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 15)
        if not self.server.started:
            raise RuntimeError(f"server on port {self.port} did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(app: Any, **config: Any) -> Iterator[ThreadedServer]:
    with ThreadedServer(app, **config) as server:
        yield server


class RawResponse:
    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        closed: bool,
        status_line: str = "",
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body  # de-chunked
        self.closed = closed  # the server closed the connection after this response
        self.status_line = status_line  # as sent: "HTTP/1.1 404 Not Found"

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def raw_request(
    port: int, data: bytes, timeout: float = 10.0, check_closed: bool = False
) -> RawResponse:
    """Send bytes exactly as given on a fresh connection and parse one response.

    For what httpx would normalise: raw targets, absolute-form, malformed framing.
    """
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(data)
        return read_response(sock, check_closed)


def read_response(sock: socket.socket, check_closed: bool = False) -> RawResponse:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    lookup = {k.lower(): v for k, v in headers}
    body = rest
    closed = False
    if "content-length" in lookup:
        length = int(lookup["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    elif lookup.get("transfer-encoding") == "chunked":
        decoded = b""
        while True:
            while b"\r\n" not in body:
                body += sock.recv(65536)
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            while len(body) < size + 2:
                body += sock.recv(65536)
            decoded += body[:size]
            body = body[size + 2 :]
            if size == 0:
                break
        body = decoded
    else:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            body += chunk
    if not closed and check_closed:
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except (TimeoutError, OSError):
            closed = False
    return RawResponse(status, headers, body, closed, lines[0])


class RedisServer:
    """A real redis-server on a free loopback port, no persistence; can be stopped and restarted."""

    def __init__(self) -> None:
        from programs import program

        self.binary = program("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Any = None

    def start(self) -> RedisServer:
        import subprocess

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


SRC = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "src")


def lb_env(**extra: str) -> dict[str, str]:
    """Environment for an `lb` subprocess that imports this checkout's src/."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def workers_of(pid: int) -> list[int]:
    """The child processes of `pid` (the workers of `lb serve` or gunicorn, and any helper)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [e.decode(errors="replace") for e in f.read().split(b"\0") if e]
    return dict(item.split("=", 1) for item in items if "=" in item)


class LbProcess:
    """`python -m lb serve` as a subprocess on a free port; always stopped by its fixture."""

    def __init__(
        self,
        config_path: str,
        workers: int = 1,
        env: dict[str, str] | None = None,
        gunicorn: bool = False,
        args: tuple[str, ...] = (),
        https: bool = False,
    ) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        self.config_path = config_path
        extra = args
        args = [sys.executable, "-m", "lb", "serve", "-c", config_path, "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--workers", str(workers)]
        if gunicorn:  # `gunicorn lb.app:app -k lb.worker.UvicornWorker` instead of `lb serve`
            env = {**(env or {}), "LB_CONFIG": config_path}
            args = [sys.executable, "-m", "gunicorn", "lb.app:app", "-k", "lb.worker.UvicornWorker"]
            args += ["-w", str(workers), "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5"]
        args += extra
        # Output goes to a file: a pipe nobody reads would block the server once it fills.
        self.log_path = config_path + ".log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            args,
            env=lb_env(**(env or {})),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def write_config(self, config: Any) -> None:
        """Replace the config file (atomically: a reload never reads half of it)."""
        import os

        import yaml

        text = config if isinstance(config, str) else yaml.safe_dump(config)
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def output(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> LbProcess:
        import ssl
        import urllib.request

        # Up is up, whatever certificate it shows: the tests check that themselves.
        context = ssl._create_unverified_context() if self.url.startswith("https") else None

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"lb exited: {self.output()}")
            try:
                url = self.url + "/_lb/healthz"
                with urllib.request.urlopen(url, timeout=1, context=context) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout, 0.05)
        return self

    def rss_kib(self) -> int:
        """Resident memory of the process tree (the server and any workers), in KiB."""
        import os

        total = 0
        pids = [self.process.pid]
        children = f"/proc/{self.process.pid}/task/{self.process.pid}/children"
        if os.path.exists(children):
            with open(children) as f:
                pids += [int(p) for p in f.read().split()]
        for pid in pids:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def stop(self, sig: int = 15, timeout: float = 20.0) -> int:
        import os
        import subprocess

        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)
        self.log.close()
        return int(self.process.returncode)


class ClientThreads:
    """`clients` threads running `_run` (a subclass's request loop, which ends once `_stop` is
    set) from entering the `with` block until leaving it."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


class Load(ClientThreads):
    """Clients sending GET / in a loop until stopped (or `limit` requests), recording
    (start time, status, X-Backend) of each answer and the errors."""

    def __init__(self, url: str, clients: int = 3, limit: int = 20_000) -> None:
        super().__init__(url, clients)
        self.results: list[tuple[float, int, str]] = []
        self.errors: list[str] = []
        self._limit = limit

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set() and len(self.results) < self._limit:
                started = time.monotonic()
                try:
                    response = client.get("/")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                backend = response.headers.get("x-backend", "")
                self.results.append((started, response.status_code, backend))

    def count(self) -> int:
        return len(self.results)
