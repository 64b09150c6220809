"""The performance benchmark of docs/performance.md, in one command.

    .venv/bin/python bench/run_benchmarks.py            # ~15-20 min on a quiet 2-core box
    .venv/bin/python bench/run_benchmarks.py --quick    # a smoke run: 1 repeat, 3 s each

Run it with the Python of lb's virtualenv (the Python targets run from it; `--venv` to name
another). It runs the shared harness (`../shared/bench/lbbench.py`, found beside the project or
one folder further up, or given with `--harness`; see its README) twice, for `/` (a ~100-byte
body) and `/big` (16 KiB), each at 50 and 200 connections, with these targets interleaved:

    nginx, haproxy                 the C load balancers (1 worker each)
    naive-aiohttp                  the naive Python proxy the targets are stated against
    lb-proxy, lb-proxy-2w          lb, proxy only (round robin), 1 and 2 workers
    lb-full, lb-full-2w            lb with every feature on (bench/lb_target.py, profile=full)

It keeps the harness's JSON in bench/results/ and writes the tables, the machine, the versions and
the exact commands between the `results` markers of docs/performance.md (the rest of that page is
prose, kept as it is). `--report` rewrites the tables from the JSON of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS_PLACES = [ROOT.parent / "shared", ROOT.parent.parent / "shared"]  # checkout, worktree
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

LB = "PYTHONPATH={src} $LB_PYTHON {target}".format(
    src=shlex.quote(str(ROOT / "src")), target=shlex.quote(str(ROOT / "bench" / "lb_target.py"))
)
TARGETS = [
    "nginx",
    "haproxy",
    "naive-aiohttp",
    f"custom@name=lb-proxy,python=1:{LB}",
    f"custom@name=lb-proxy-2w,workers=2,python=1:{LB}",
    f"custom@name=lb-full,profile=full,python=1:{LB}",
    f"custom@name=lb-full-2w,profile=full,workers=2,python=1:{LB}",
]
PATHS = {"/": "small", "/big": "big"}

# (header, summary key, format): "int" groups thousands, "ratio" has two decimals, "ms" two
# decimals below 100, "pct" and "us" are whole numbers.
COLUMNS = [
    ("target", None, None),
    ("rps", "rps_median", "int"),
    ("× nginx", "rps_ratio_to_ref", "ratio"),
    ("× aiohttp", None, "ratio"),
    ("p50 ms", "p50_ms", "ms"),
    ("p99 ms", "p99_ms", "ms"),
    ("LB CPU %", "lb_cpu_pct", "pct"),
    ("µs/req", "lb_cpu_us_per_req", "us"),
    ("n", None, None),
    ("foreign %", "foreign_cpu_pct_max", "pct"),
]


def harness_command(args: argparse.Namespace, path: str, out: Path) -> list[str]:
    command = [sys.executable, str(args.harness), "--venv", args.venv, "-t", *TARGETS]
    command += ["-c", args.connections, "-d", str(args.duration), "-r", str(args.repeats)]
    command += ["--path", path, "--ref", "nginx", "--out", str(out)]
    command += ["--backend-ports", args.backend_ports, "--lb-port", str(args.lb_port)]
    return command


def run(args: argparse.Namespace) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    outputs = []
    for path, name in PATHS.items():
        out = RESULTS / f"{args.name}-{name}.json"
        command = harness_command(args, path, out)
        print("+", shlex.join(command), flush=True)
        subprocess.run(command, cwd=args.harness.parent.parent, check=True)
        # What was measured, for --report later: this commit (and whether files were changed).
        doc = json.loads(out.read_text())
        doc["meta"]["lb_commit"] = _commit()
        doc["meta"]["run_benchmarks"] = args.command
        out.write_text(json.dumps(doc, indent=1))
        outputs.append(out)
    return outputs


def table(doc: dict[str, object]) -> str:
    summary: dict[str, dict[str, dict[str, float]]] = doc["summary"]  # type: ignore[assignment]
    lines = []
    for conns, per in summary.items():
        aiohttp = per.get("naive-aiohttp", {}).get("rps_median")
        lines.append(f"**{conns} connections**\n")
        lines.append("| " + " | ".join(name for name, _, _ in COLUMNS) + " |")
        lines.append("|---|" + "---:|" * (len(COLUMNS) - 1))
        for label, s in per.items():
            cells = []
            for name, key, kind in COLUMNS:
                if name == "target":
                    cells.append(label)
                elif name == "× aiohttp":
                    cells.append(_format(s["rps_median"] / aiohttp if aiohttp else None, "ratio"))
                elif name == "n":
                    cells.append(f"{s['n']}/{s['n_all']}")
                else:
                    cells.append(_format(s.get(key) if key else None, kind))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _format(value: float | None, kind: str | None) -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "ms" and value < 100:
        return f"{value:.2f}"
    return f"{round(value):,}".replace(",", " ")


def machine(doc: dict[str, object], venv_python: str) -> str:
    meta: dict[str, object] = doc["meta"]  # type: ignore[assignment]
    v: dict[str, object] = meta["versions"]  # type: ignore[assignment]
    venv: dict[str, str] = v.get("venv", {})  # type: ignore[assignment]
    code = "import importlib.metadata as m; print(m.version('prometheus-client'))"
    result = subprocess.run([venv_python, "-c", code], capture_output=True, text=True)
    prometheus = result.stdout.strip() or "?"
    packages = ", ".join(
        f"{name} {venv.get(name)}"
        for name in ("uvicorn", "uvloop", "httptools", "httpx", "aiohttp")
    )
    return (
        f"- machine: {v.get('cpus')} vCPU {v.get('cpu_model', '?')}, kernel {v.get('kernel')}, "
        f"{platform.system()}\n"
        f"- {v.get('nginx')}; {v.get('haproxy')}; {v.get('wrk')}\n"
        f"- Python {venv.get('python')}, {packages}, prometheus-client {prometheus}\n"
        f"- lb commit {meta.get('lb_commit', '?')}; started {meta.get('started')}; load average "
        f"at the end of the first run {[round(x, 2) for x in meta.get('loadavg_at_end', [])]}\n"
    )


def _commit() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return result.stdout.strip()

    changed = git("status", "--porcelain", "--", "src", "bench/lb_target.py")
    return (git("rev-parse", "--short", "HEAD") or "?") + (" with local changes" if changed else "")


def write_doc(outputs: list[Path], venv: str) -> None:
    metas = [json.loads(out.read_text())["meta"] for out in outputs]
    took = sum(meta["elapsed_s"] for meta in metas)
    command = metas[0].get("run_benchmarks", "python bench/run_benchmarks.py")
    parts = [f"Produced by `{command}` in {took / 60:.0f} min (harness commands below).\n"]
    for out in outputs:
        doc = json.loads(out.read_text())
        args = doc["meta"]["args"]
        size = "~100 B body" if args["path"] == "/" else f"{args['big_size']} B body"
        parts.append(
            f"### `{args['path']}` ({size}), {args['duration']} s × {args['repeats']} repeats\n"
        )
        parts.append(table(doc))
    first = json.loads(outputs[0].read_text())
    parts.append("Machine and versions:\n")
    parts.append(machine(first, str(Path(venv) / "bin" / "python")))
    parts.append("Harness commands (run from the folder above the project):\n")
    parts.append("```sh")
    for out in outputs:
        argv = json.loads(out.read_text())["meta"]["argv"]
        parts.append(shlex.join(["python3", *argv]))
    parts.append("```\n")
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n" + "\n".join(parts) + f"\n{END}{tail}")
    print(f"wrote {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default=sys.prefix, help="lb's virtualenv (default: this one)")
    parser.add_argument("--harness", type=Path, help="lbbench.py (default: ../shared/bench)")
    parser.add_argument("-d", "--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("-r", "--repeats", type=int, default=2, help="interleaved repeats")
    parser.add_argument("-c", "--connections", default="50,200")
    parser.add_argument("--name", default="performance", help="JSON file prefix in bench/results")
    parser.add_argument("--backend-ports", default="19001-19003", help="as the harness's")
    parser.add_argument("--lb-port", type=int, default=18080, help="as the harness's")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 s: a smoke run")
    parser.add_argument("--report", action="store_true", help="only rewrite the doc's tables")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeats, args.name = 3, 1, "quick"
    if args.harness is None:
        found = [p / "bench" / "lbbench.py" for p in HARNESS_PLACES]
        args.harness = next((p for p in found if p.exists()), found[0])
    args.harness = args.harness.resolve()
    args.command = shlex.join(["python", "bench/run_benchmarks.py", *sys.argv[1:]])
    started = time.time()
    if args.report:
        outputs = [RESULTS / f"{args.name}-{name}.json" for name in PATHS.values()]
    else:
        outputs = run(args)
    write_doc(outputs, args.venv)
    print(f"done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
