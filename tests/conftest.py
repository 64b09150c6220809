from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import ThreadedServer  # noqa: E402


def _servers() -> Iterator[type[ThreadedServer]]:
    started: list[ThreadedServer] = []

    class _Tracked(ThreadedServer):
        def start(self) -> ThreadedServer:
            started.append(self)
            return super().start()

    def factory(app: object, **config: object) -> ThreadedServer:
        return _Tracked(app, **config).start()

    yield factory  # type: ignore[misc]
    for server in reversed(started):
        server.stop()


def _backends(start_server):  # type: ignore[no-untyped-def]
    from apps import Backend

    def factory(n: int = 3) -> list[tuple[Backend, ThreadedServer]]:
        out = []
        for i in range(n):
            app = Backend(f"b{i + 1}")
            out.append((app, start_server(app)))
        return out

    return factory


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lb-http",
        default="lb",
        choices=("lb", "httptools", "h11"),
        help="the HTTP protocol start_balancer runs lb on: lb's own (lb serve), or uvicorn's "
        "(bare `uvicorn lb.app:app`, as in a host app): `make test-plain-asgi`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--lb-http") == "lb":
        return
    skip = pytest.mark.skip(reason="an edge rule of lb's own protocol (--lb-http=lb only)")
    for item in items:
        if item.get_closest_marker("lb_protocol"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lb_http(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--lb-http"))


def _balancers(start_server, lb_http: str = "lb"):  # type: ignore[no-untyped-def]
    from lb.app import LoadBalancer
    from lb.server import uvicorn_options

    def factory(config: object, **overrides: object) -> ThreadedServer:
        app = config if isinstance(config, LoadBalancer) else LoadBalancer(config)  # type: ignore[arg-type]
        options = uvicorn_options(host="127.0.0.1", port=0)
        for key in ("host", "port", "workers", "log_level"):
            options.pop(key)
        if lb_http != "lb":
            options["http"] = lb_http
        options.update(overrides)
        server = start_server(app, **options)
        server.app = app  # type: ignore[attr-defined]
        return server

    return factory


@pytest.fixture
def start_server() -> Iterator[type[ThreadedServer]]:
    """Start real uvicorn servers: `start_server(app)`; all are stopped at teardown."""
    yield from _servers()


@pytest.fixture
def start_backends(start_server):  # type: ignore[no-untyped-def]
    """`start_backends(n)` -> list of (Backend app, server) on free ports."""
    return _backends(start_server)


@pytest.fixture
def start_balancer(start_server, lb_http):  # type: ignore[no-untyped-def]
    """`start_balancer(config)` -> a real lb (its own HTTP protocol, unless --lb-http says
    else) on a free port."""
    return _balancers(start_server, lb_http)


@pytest.fixture(scope="module")
def module_server() -> Iterator[type[ThreadedServer]]:
    """`start_server` for servers that a whole test module shares (for tests that change
    nothing, such as access checks); stopped after the module."""
    yield from _servers()


@pytest.fixture(scope="module")
def module_backends(module_server):  # type: ignore[no-untyped-def]
    return _backends(module_server)


@pytest.fixture(scope="module")
def module_balancer(module_server, lb_http):  # type: ignore[no-untyped-def]
    return _balancers(module_server, lb_http)


@pytest.fixture
def config_file(tmp_path):  # type: ignore[no-untyped-def]
    """`config_file(config)` writes `config` (a dict, or YAML text) to one file and returns its
    path; calling it again replaces the file atomically, as an operator's deploy would."""
    import os

    import yaml

    path = tmp_path / "lb.yaml"

    def write(config: object) -> str:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        tmp = tmp_path / "lb.yaml.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
        return str(path)

    return write


@pytest.fixture
def raw_backend() -> Iterator[object]:
    """`raw_backend(script)` -> a started scripted TCP backend (tests/rawbackend.py)."""
    from rawbackend import RawBackend

    started: list[RawBackend] = []

    def factory(script: object) -> RawBackend:
        backend = RawBackend(script).start()  # type: ignore[arg-type]
        started.append(backend)
        return backend

    yield factory
    for backend in started:
        backend.stop()


@pytest.fixture
def nginx() -> Iterator[object]:
    """Two nginx backends (`.urls`) with fixed answers, on a generated config (tests/wrkload.py)."""
    from wrkload import Nginx

    server = Nginx(2).start()
    yield server
    server.stop()


def pool_config(urls: list[str], **pool: object) -> dict[str, object]:
    """A one-pool config dict for `urls`, access log off unless asked."""
    return {"pools": {"web": {"backends": urls, **pool}}, "logging": {"access_log": False}}


@pytest.fixture
def cached(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    """`cached(routes=None, **cache_config)` -> (Backend app, httpx client on a balancer with
    that cache in front of it, balancer server); the memory store unless `store` says else."""
    import httpx

    clients: list[httpx.Client] = []

    def factory(routes: list[dict[str, object]] | None = None, **cache: object):  # type: ignore[no-untyped-def]
        ((backend, server),) = start_backends(1)
        config = pool_config([server.url])
        config["cache"] = {"store": "memory", **cache}
        if routes:
            config["routes"] = routes
        lb = start_balancer(config)
        client = httpx.Client(base_url=lb.url, timeout=10)
        clients.append(client)
        return backend, client, lb

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def redis_server() -> Iterator[object]:
    """A fresh real redis-server on a free port (`.url`, `.stop()`, `.start()`, `.restart()`)."""
    from servers import RedisServer

    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def lb_process(tmp_path):  # type: ignore[no-untyped-def]
    """`lb_process(config, workers=1)` -> a ready `lb serve` subprocess, stopped at teardown;
    with `gunicorn=True`, gunicorn with lb's worker class instead; `args` go on its command line,
    `https=True` when it serves TLS; `wait=False` when the test sees for itself that it is up
    (a listener that wants a PROXY header first)."""
    import yaml

    from servers import LbProcess

    started: list[LbProcess] = []

    def factory(
        config: dict[str, object],
        workers: int = 1,
        gunicorn: bool = False,
        args: tuple[str, ...] = (),
        https: bool = False,
        wait: bool = True,
        **env: str,
    ) -> LbProcess:
        path = tmp_path / f"config-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(config))
        process = LbProcess(str(path), workers, env, gunicorn, args, https)
        started.append(process)
        return process.wait_ready() if wait else process

    yield factory
    for process in started:
        process.stop()
        # Shown with a failed test only: a 500's traceback is in the server's log, nowhere else.
        print(f"--- {process.log_path} (tail)\n{process.output()[-4000:]}")


@pytest.fixture
def origins() -> Iterator[object]:
    """`origins.node(keepalive_ms)`, `origins.gunicorn(keepalive_s)`: real non-Python-ASGI origins
    as subprocesses (tests/origins.py), stopped at teardown."""
    import origins as module

    started: list[module.Origin] = []

    class Start:
        @staticmethod
        def node(keepalive_ms: int) -> module.Origin:
            started.append(module.start_node(keepalive_ms))
            return started[-1]

        @staticmethod
        def gunicorn(keepalive_s: int) -> module.Origin:
            started.append(module.start_gunicorn(keepalive_s))
            return started[-1]

    yield Start
    for origin in started:
        origin.stop()


@pytest.fixture
def ca(tmp_path):  # type: ignore[no-untyped-def]
    """A private CA (tests/pki.py) writing into tmp_path: `.cert_file`, `.issue(...)`."""
    from pki import CA

    return CA(tmp_path)
