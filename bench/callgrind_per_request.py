"""User-space instructions per request of lb (docs/performance.md's "Ir"), counted by callgrind.

    python bench/callgrind_per_request.py [--profile proxy|full] [--requests N] [--python PY]

Starts two nginx backends (tests/wrkload.py), lb's bench target (bench/lb_target.py, one worker)
under `valgrind --tool=callgrind` with instrumentation off, warms it up, turns it on, sends N
requests with wrk (50 connections, `/`), dumps and divides. Instructions do not depend on what
else the machine runs, so this is the measure for a shared machine. `--python` runs lb with
another interpreter (its venv must have lb installed); PYTHONPATH picks other sources (a
checkout of an earlier commit). `--cpu` runs lb without valgrind and reports its CPU time per
request instead (user + system, from /proc): a timing, so it varies with the machine's load.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import free_port, wait_for_port  # noqa: E402
from wrkload import Nginx, run_wrk  # noqa: E402


def instructions_in(directory: str) -> int:
    """The instructions counted in the callgrind.out* files of `directory`, summed."""
    total = 0
    for path in glob.glob(os.path.join(directory, "callgrind.out*")):
        with open(path) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
    return total


def _cpu_ticks(pid: int) -> int:
    """User + system CPU of `pid` so far, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def measure(
    profile: str,
    requests: int,
    python: str,
    warmup: int,
    cpu: bool = False,
    path: str = "/",
    script: str = "lb_target.py",
) -> tuple[int, int]:
    """(instructions, requests); with `cpu`, no valgrind and (CPU µs, requests) instead."""
    nginx = Nginx(2).start()
    out = tempfile.mkdtemp(prefix="lb-callgrind-")
    port = free_port()
    env = dict(
        os.environ,
        LB_HOST="127.0.0.1",
        LB_PORT=str(port),
        LB_BACKENDS=",".join(nginx.urls),
        LB_WORKERS="1",
        LB_OPT_PROFILE=profile,
        PYTHONHASHSEED="0",
    )
    command = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        "--instr-atstart=no",  # on once warmed up (callgrind_control -i on)
        f"--callgrind-out-file={out}/callgrind.out.%p",
        python,
        str(ROOT / "bench" / script),
    ]
    if cpu:
        command = command[command.index(python) :]
    lb = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=900)  # minutes: Python starts slowly under valgrind
        url = f"http://127.0.0.1:{port}"
        run_wrk(url, requests=warmup, connections=50, max_seconds=300, paths=(path,))
        if cpu:
            before = _cpu_ticks(lb.pid)
            result = run_wrk(url, requests=requests, connections=50, max_seconds=600, paths=(path,))
            ticks = _cpu_ticks(lb.pid) - before
            return ticks * 1_000_000 // os.sysconf("SC_CLK_TCK"), result.requests
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(lb.pid)], check=True, capture_output=True)
        result = run_wrk(url, requests=requests, connections=50, max_seconds=600, paths=(path,))
        subprocess.run([*control, "-d", str(lb.pid)], check=True, capture_output=True)
        time.sleep(1)
        return instructions_in(out), result.requests
    finally:
        lb.terminate()
        try:
            lb.wait(60)
        except subprocess.TimeoutExpired:
            lb.kill()
            lb.wait(10)
        nginx.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="proxy", choices=("proxy", "full"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--path", default="/", help="/ (a short body) or /big (16 KiB)")
    parser.add_argument(
        "--floor", action="store_true", help="bench/floor_proxy.py instead of lb (the yardstick)"
    )
    parser.add_argument("--cpu", action="store_true", help="CPU µs per request, no valgrind")
    args = parser.parse_args()
    instructions, done = measure(
        args.profile,
        args.requests,
        args.python,
        args.warmup,
        args.cpu,
        args.path,
        "floor_proxy.py" if args.floor else "lb_target.py",
    )
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    per = instructions / done if done else 0
    unit = "CPU µs" if args.cpu else "Ir"
    print(
        f"python {version} profile={args.profile} path={args.path}:"
        f" {instructions} {unit} / {done} requests"
    )
    print(
        f"{per:,.1f} CPU µs per request" if args.cpu else f"{round(per):,} instructions per request"
    )


if __name__ == "__main__":
    main()
