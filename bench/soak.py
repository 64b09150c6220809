"""Memory soak: RSS of one lb worker over 1,000,000 requests from 1,000 keep-alive clients.

    .venv/bin/python bench/soak.py                       # proxy only, 1 worker
    .venv/bin/python bench/soak.py --profile full        # every feature on (bench/lb_target.py)

The shared harness (`lbbench.py --serve`) brings up its three nginx backends and lb in front of
them; wrk then drives lb with `--connections` keep-alive connections in runs sized to land on
every `--step` requests, and after each the RSS of every lb process is read from /proc (VmRSS
now, VmHWM the peak), with wrk's errors by kind (a timeout: no response within 10 s). wrk
reconnects at the start of each run: the clients are the same 1,000 connections for a run, not
for the whole soak. The figures go to stdout as a Markdown table and to
bench/results/soak-<profile>.json.

The issue's target: RSS under 120 MB per worker after 1M requests, and no growth from the second
to the fourth 250k (a leak would grow linearly with requests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS_PLACES = [ROOT.parent / "shared", ROOT.parent.parent / "shared"]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def python_pids(tree: list[int]) -> list[int]:
    """The lb processes (python) of the target's process tree, alive now."""
    pids = []
    for pid in tree:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and b"python" in Path(cmdline[0].decode()).name.encode():
            pids.append(pid)
    return pids


def wrk(url: str, script: Path, connections: int, threads: int, seconds: int) -> dict[str, float]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"LBBENCH_JSON (\{.*\})", out)
    if match is None:
        raise RuntimeError(f"no result from wrk: {out[-500:]}")
    result: dict[str, float] = json.loads(match.group(1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--step", type=int, default=250_000)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--profile", default="proxy", choices=["proxy", "full"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--venv", default=sys.prefix, help="lb's virtualenv (default: this one)")
    parser.add_argument("--harness", type=Path, help="lbbench.py (default: ../shared/bench)")
    parser.add_argument("--lb-port", type=int, default=18080)
    parser.add_argument("--backend-ports", default="19001-19003")
    args = parser.parse_args()
    harness = args.harness
    if harness is None:
        found = [p / "bench" / "lbbench.py" for p in HARNESS_PLACES]
        harness = next((p for p in found if p.exists()), found[0])
    harness = harness.resolve()
    lb = "PYTHONPATH={} $LB_PYTHON {}".format(
        shlex.quote(str(ROOT / "src")), shlex.quote(str(ROOT / "bench" / "lb_target.py"))
    )
    target = f"custom@name=lb,profile={args.profile},workers={args.workers},python=1:{lb}"
    command = [sys.executable, str(harness), "--venv", args.venv, "-t", target, "--serve", "86400"]
    command += ["--lb-port", str(args.lb_port), "--backend-ports", args.backend_ports]
    print("+", shlex.join(command), flush=True)
    server = subprocess.Popen(
        command,
        cwd=harness.parent.parent,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    rows = []
    pids: list[int] = []
    serving = None
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("SERVING "):
                serving = json.loads(line[len("SERVING ") :])
                break
        if serving is None:
            raise SystemExit("the harness did not start the target")
        pids = python_pids(serving["lb_tree"])
        url = serving["url"]
        script = harness.parent / "wrk_report.lua"
        start_rss = {pid: rss_kib(pid) for pid in pids}
        print(f"lb processes {pids}, RSS at start (KiB): {start_rss}", flush=True)
        total = 0
        errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
        rate = 0.0
        mark = args.step
        started = time.monotonic()
        while total < args.requests:
            # Size the run to land just past the next mark (a 3-second probe first).
            seconds = 3 if not rate else max(1, round((mark - total) / rate + 0.5))
            result = wrk(url, script, args.connections, args.threads, seconds)
            done = int(result["requests"])
            total += done
            rate = done / (result["duration_us"] / 1e6)
            for kind in errors:
                errors[kind] += int(result[f"err_{kind}"])
            if total >= mark or total >= args.requests:
                rss = {pid: rss_kib(pid) for pid in pids}
                row = {
                    "requests": total,
                    "rss_mib": {pid: round(r[0] / 1024, 1) for pid, r in rss.items()},
                    "peak_mib": {pid: round(r[1] / 1024, 1) for pid, r in rss.items()},
                    "rps": round(rate),
                    "p99_ms": result["lat_p99_us"] / 1000,
                    "errors": dict(errors),
                    "elapsed_s": round(time.monotonic() - started),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                while mark <= total:
                    mark += args.step
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            # The harness waits for lb's graceful shutdown, which waits for the connections of
            # the last run: the figures are taken, so nothing is lost by not waiting longer.
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
            # lb and the backends run in sessions of their own: the harness would stop them.
            others = [serving["backends_pid"]] if serving else []
            for pid in [*pids, *others]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
    out = ROOT / "bench" / "results" / f"soak-{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"argv": sys.argv, "start_rss_kib": start_rss, "connections": args.connections}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("\n| requests | RSS MiB (per lb process) | peak MiB | rps | p99 ms | errors so far |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        rss = ", ".join(str(v) for v in row["rss_mib"].values())
        peak = ", ".join(str(v) for v in row["peak_mib"].values())
        print(
            f"| {row['requests']:,} | {rss} | {peak} | {row['rps']:,} | {row['p99_ms']:.1f} "
            f"| {', '.join(f'{n} {kind}' for kind, n in row['errors'].items() if n) or 0} |"
        )


if __name__ == "__main__":
    main()
