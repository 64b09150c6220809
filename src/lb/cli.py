"""The `lb` command: `serve`, `check`, `healthcheck` and `demo`."""

from __future__ import annotations

import argparse
import logging.config
import os
import signal
import sys
from collections.abc import Sequence

from lb import __version__
from lb.config import Config, ConfigError, ServerTLSConfig, default_config_path, load_config
from lb.tls import ServerTLS, TLSError


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    path = args.config or default_config_path()
    config = _load_or_report(path)
    if config is None:
        return 2
    print(f"{path}: ok: {config.summary()}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lb.announce import announce, http_url
    from lb.control.supervisor import serve
    from lb.logsetup import capture_uncaught, log_config, reopen_log_files
    from lb.server import uvicorn_options

    path = os.path.abspath(args.config or default_config_path())
    config = _load_or_report(path)
    if config is None:
        return 2
    tls, problem = _listener_tls(args, config)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    # Workers (and the single-process server alike) load the app by import string and read the
    # file named here, so every process serves exactly the config that was just validated.
    os.environ["LB_CONFIG"] = path
    options = uvicorn_options(
        host=args.host,
        port=args.port,
        workers=args.workers,
        graceful_timeout=config.server.graceful_timeout,
        keepalive_timeout=config.server.keepalive_timeout,
        log_level=config.logging.level,
        tls=tls,
        proxy_protocol=config.server.proxy_protocol,
    )
    options["log_config"] = log_config(config.logging)
    # Applied here already (uvicorn applies it again) so that the start line and anything before
    # uvicorn's start have the configured format and destination.
    logging.config.dictConfig(options["log_config"])
    if config.logging.format == "json":
        capture_uncaught()
    scheme = "https" if tls is not None else "http"
    announce(config, [http_url(args.host, args.port, scheme)], mark=True)
    # SIGUSR1 reopens the log files; its default action would end the process. The app takes it
    # over once started (and also reopens its access log); until then, and in the supervisor of
    # several workers, this reopens lb's own files.
    signal.signal(signal.SIGUSR1, lambda signum, frame: reopen_log_files())
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully, so that the
    # process ends "killed by SIGTERM". A graceful stop is a success for us: exit status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    # SIGHUP is lb's reload signal. Started under nohup it arrives ignored (an ignored signal stays
    # ignored across exec), and the app leaves a signal someone else set alone: reloads would be
    # silently off. `lb serve` owns its process: take SIGHUP back.
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    from lb.multiprocess import multiprocess_dir, prepare_multiprocess

    # `serve` is uvicorn.run, except that SIGHUP to a multi-worker instance reloads every worker
    # in place (lb.control.supervisor).
    if args.workers <= 1 and multiprocess_dir() is None:
        serve("lb.app:app", path, **options)
        return 0
    # Before any worker exists: they import prometheus_client with the shared directory named
    # (and a directory the user named is emptied of an earlier run's files).
    cleanup = prepare_multiprocess()
    try:
        serve("lb.app:app", path, **options)
    finally:
        cleanup()
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from lb.probe import healthcheck

    config = _load_or_report(args.config or default_config_path())
    if config is None:
        return 2
    healthy, seen = healthcheck(config, args.port)
    print(seen, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def _listener_tls(
    args: argparse.Namespace, config: Config
) -> tuple[ServerTLSConfig | None, str | None]:
    """`server.tls`, with `--ssl-certfile/--ssl-keyfile` in place of its files; or the problem
    with the files given on the command line."""
    tls = config.server.tls
    if args.ssl_keyfile and not args.ssl_certfile:
        return None, "--ssl-keyfile: needs --ssl-certfile"
    if not args.ssl_certfile:
        return tls, None
    client_ca = tls.client_ca_file if tls is not None else None
    try:
        ServerTLS(args.ssl_certfile, args.ssl_keyfile, client_ca)
    except TLSError as exc:
        return None, f"--ssl-certfile/--ssl-keyfile: {exc}"
    return ServerTLSConfig(args.ssl_certfile, args.ssl_keyfile, client_ca), None


def cmd_demo(args: argparse.Namespace) -> int:
    from lb.demo import run_demo

    return run_demo(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lb", description="An HTTP load balancer.")
    parser.add_argument("--version", action="version", version=f"lb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the balancer")
    serve.add_argument(
        "-c", "--config", help="config file (default: $LB_CONFIG, else ./config.yaml)"
    )
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--ssl-certfile", help="serve HTTPS with this PEM certificate chain (over server.tls)"
    )
    serve.add_argument("--ssl-keyfile", help="its private key (default: in the certfile)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config file")
    check.add_argument(
        "-c", "--config", help="config file (default: $LB_CONFIG, else ./config.yaml)"
    )
    check.set_defaults(func=cmd_check)

    probe = sub.add_parser(
        "healthcheck",
        help="exit 0 if the lb serving this config answers its healthz (for containers)",
    )
    probe.add_argument(
        "-c", "--config", help="config file (default: $LB_CONFIG, else ./config.yaml)"
    )
    probe.add_argument("--port", type=int, default=8080, help="the traffic port lb serves")
    probe.set_defaults(func=cmd_healthcheck)

    demo = sub.add_parser("demo", help="three demo backends and the balancer, no config needed")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        print("--workers: must be at least 1", file=sys.stderr)
        return 2
    result: int = args.func(args)
    return result
