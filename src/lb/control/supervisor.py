"""`lb serve`: uvicorn, with SIGHUP reloading the config in place in every worker.

One process (`--workers 1`): the app itself handles SIGHUP (see `runtime.Control`). Several:
uvicorn's supervisor would answer SIGHUP by replacing every worker, which loses what they know
(health, counters, latency); lb's supervisor instead checks the file and, when it is valid, posts a
reload to the control file and wakes every worker (`workers.wake_all`), which applies it in place.
An invalid file is reported once, here, and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from uvicorn import Config as UvicornConfig
from uvicorn.supervisors.multiprocess import Multiprocess

from lb.config import ConfigError, load_config
from lb.control.shared import ENV_DIR, ControlFile, add_event, prepare_control_dir
from lb.control.workers import wake_all
from lb.logsetup import reopen_log_files

logger = logging.getLogger("lb.control")


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor with an in-place reload on SIGHUP."""

    def __init__(self, config: UvicornConfig, sockets: list[Any], config_path: str) -> None:
        super().__init__(config, sockets)
        self.config_path = config_path
        self.origin = f"supervisor:{os.getpid()}"

    def handle_hup(self) -> None:
        try:
            load_config(self.config_path)
        except ConfigError as exc:
            logger.error(
                "SIGHUP: %s has problems, the running config is unchanged:\n  %s",
                self.config_path,
                "\n  ".join(exc.problems),
            )
            return
        directory = os.environ.get(ENV_DIR)
        if not directory:  # pragma: no cover - serve() always names one
            return
        origin = self.origin

        def change(document: dict[str, Any], seq: int) -> bool:
            add_event(document, seq, origin, "reload", {})
            return True

        file = ControlFile(directory)
        try:
            seq = file.update(change)
            wake_all(directory, {"op": "sync", "seq": seq})
        except OSError as exc:
            logger.error("SIGHUP: cannot write the control file in %s: %s", directory, exc)
            return
        finally:
            file.close()
        logger.info("SIGHUP: reloading %s in every worker", self.config_path)

    def init_processes(self) -> None:
        with _usr1_held():
            super().init_processes()

    def keep_subprocess_alive(self) -> None:
        with _usr1_held():  # it starts a replacement for a worker that died
            super().keep_subprocess_alive()

    def handle_usr1(self) -> None:
        """Reopen this process's log files and have every worker reopen its own (logrotate)."""
        try:
            reopen_log_files()
        except OSError as exc:
            logger.error("SIGUSR1: cannot reopen the log files: %s", exc)
        for process in self.processes:
            pid = process.process.pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
        logger.info(
            "SIGUSR1: log files reopened, and passed on to %d worker(s)", len(self.processes)
        )


@contextlib.contextmanager
def _usr1_held() -> Iterator[None]:
    """SIGUSR1 blocked while workers are started. They inherit the mask, so a SIGUSR1 that comes
    before a worker's app has taken it over waits, pending, instead of ending the worker (its
    default action); the app unblocks it (`lb.logsetup.on_reopen_signal`). Here too it only
    waits until the workers are started."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class TLSAfterProxyConfig(UvicornConfig):
    """uvicorn's Config for a TLS listener with `server.proxy_protocol`: the server accepts plain
    TCP, and lb's protocol starts TLS itself once it has read the PROXY header that comes first
    (`lb.proxyproto.accept`), with the context uvicorn made (`lb_tls_after_proxy`)."""

    def load(self) -> None:
        super().load()
        self.lb_tls_after_proxy = self.ssl
        self.ssl = None


def _run_one(config: UvicornConfig) -> None:
    """`uvicorn.run` for a Config made here."""
    import uvicorn

    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # pragma: no cover - as uvicorn.run
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


def serve(app: str, config_path: str, **options: Any) -> None:
    """Run `app` (an import string) like `uvicorn.run(app, **options)`, with lb's supervisor when
    `options["workers"]` asks for more than one process."""
    import uvicorn

    config_class = TLSAfterProxyConfig if options.pop("tls_after_proxy", False) else UvicornConfig
    workers = options.get("workers") or 1
    if workers <= 1:
        if config_class is UvicornConfig:
            uvicorn.run(app, **options)
        else:
            _run_one(config_class(app, **options))
        return
    cleanup = prepare_control_dir()  # before the workers start: they inherit its name
    try:
        config = config_class(app, **options)
        sock = config.bind_socket()
        try:
            Supervisor(config, [sock], config_path).run()
        except KeyboardInterrupt:  # pragma: no cover - as uvicorn.run
            pass
    finally:
        cleanup()
