"""The performance benchmark of docs/performance.md, in one command.

    .venv/bin/python bench/run_benchmarks.py            # ~25 min on a quiet 2-core box
    .venv/bin/python bench/run_benchmarks.py --quick    # a smoke run: 1 repeat, 3 s each
    .venv/bin/python bench/run_benchmarks.py --report   # rewrite the doc's sections from the JSON

Run it with the Python of lb's virtualenv (the Python targets run from it; `--venv` to name
another). It runs the shared harness (`../shared/bench/lbbench.py`, found beside the project or
one folder further up, or given with `--harness`; see its README) twice, for `/` (a ~100-byte
body) and `/big` (16 KiB), each at 50 and 200 connections, with these targets interleaved
(1 worker each):

    nginx, haproxy     the C load balancers
    naive-aiohttp      the naive Python proxy the targets are stated against
    python-floor       bench/floor_proxy.py: the least a Python proxy does (when the file exists)
    lb-before          lb at `--before REV` (default 6467445, where issue 19's round started),
                       from a `git archive` in bench/.before/REV with a virtualenv of its own
    lb-proxy           lb, proxy only (round robin)
    lb-full            lb with every feature on (bench/lb_target.py, profile=full)

and with `--workers2` also lb-proxy-2w and lb-full-2w. `--profile` (on for a full run, off for
`--quick`) profiles each Python target once more under py-spy (the harness's `--profile`, into
bench/results/profile-small and -big).

It keeps the harness's JSON in bench/results/ and rewrites three sections of
docs/performance.md (bench/perf_report.py): the tables (`results`), issue 19's targets (`targets`,
with the soak's bench/results/soak-*.json) and lb's time by layer before and after (`profile`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import perf_report

ROOT = Path(__file__).resolve().parent.parent
HARNESS_PLACES = [ROOT.parent / "shared", ROOT.parent.parent / "shared"]  # checkout, worktree
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
FLOOR = ROOT / "bench" / "floor_proxy.py"
BEFORE = "6467445"  # the commit issue 19's round of work started from
PATHS = {"/": "small", "/big": "big"}


def lb_command(root: Path) -> str:
    """The custom target's command: bench/lb_target.py of the checkout at `root`."""
    src, target = shlex.quote(str(root / "src")), shlex.quote(str(root / "bench" / "lb_target.py"))
    return f"PYTHONPATH={src} $LB_PYTHON {target}"


def targets(
    before: Path | None,
    workers2: bool,
    floor: Path | None,
    granian: bool = False,
    venv_new: Path | None = None,
) -> list[str]:
    """The harness's target specs, in the order each repeat runs them."""
    lb = lb_command(ROOT)
    specs = ["nginx", "haproxy", "naive-aiohttp"]
    if floor is not None:
        specs.append(f"custom@name=python-floor,python=1:$LB_PYTHON {shlex.quote(str(floor))}")
    if before is not None:
        # Its own venv: that revision pins uvicorn 0.54, which today's lb no longer does.
        venv = before / "venv"
        specs.append(f"custom@name=lb-before,venv={venv},python=1:{lb_command(before)}")
    specs += [
        f"custom@name=lb-proxy,python=1:{lb}",
        f"custom@name=lb-full,profile=full,python=1:{lb}",
    ]
    if granian:
        # granian serving lb.app:app (issue 19's alternative server), proxy only.
        specs.append(f"custom@name=lb-granian,server=granian,python=1:{lb}")
    if venv_new is not None:
        # The same lb on the other interpreter of CI and the Dockerfile (.venv-3.13).
        specs.append(f"custom@name=lb-proxy-new,venv={venv_new},python=1:{lb}")
    if workers2:
        specs += [
            f"custom@name=lb-proxy-2w,workers=2,python=1:{lb}",
            f"custom@name=lb-full-2w,profile=full,workers=2,python=1:{lb}",
        ]
    return specs


def prepare_before(rev: str) -> Path:
    """bench/.before/REV: that revision's src and bench, and a venv with it installed (once)."""
    place = ROOT / "bench" / ".before" / rev
    if not (place / "pyproject.toml").exists():
        # Extracted beside and renamed, so an interrupted extraction is not taken for a whole one.
        partial = place.with_name(rev + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src", "bench", "pyproject.toml"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive.stdout, check=True)
        partial.rename(place)
    venv = place / "venv"
    installed = venv / ".installed"
    if not installed.exists():
        print(f"+ a venv for {rev} in {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "-e", str(place)], check=True)
        installed.touch()
    return place


def _label(spec: str) -> str:
    """A target spec's label, as the harness names it: `name=` of a custom one, else its kind."""
    options = spec.partition(":")[0].partition("@")[2].split(",")
    return next((o[5:] for o in options if o.startswith("name=")), spec.partition("@")[0])


def harness_command(args: argparse.Namespace, path: str, out: Path) -> list[str]:
    command = [sys.executable, str(args.harness), "--venv", args.venv, "-t", *args.targets]
    command += ["-c", args.connections, "-d", str(args.duration), "-r", str(args.repeats)]
    command += ["--path", path, "--ref", "nginx", "--out", str(out)]
    command += ["--backend-ports", args.backend_ports, "--lb-port", str(args.lb_port)]
    command += shlex.split(args.harness_args)
    if args.profile:
        command += ["--profile", str(RESULTS / f"profile-{PATHS[path]}")]
    return command


def run(args: argparse.Namespace) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    outputs = []
    for path, name in PATHS.items():
        out = RESULTS / f"{args.name}-{name}.json"
        command = harness_command(args, path, out)
        print("+", shlex.join(command), flush=True)
        if subprocess.run(command, cwd=args.harness.parent.parent).returncode:
            raise SystemExit(f"the harness failed (its output is above); {out} not written")
        # What was measured, for --report later: this commit (and whether files were changed).
        doc = json.loads(out.read_text())
        doc["meta"]["lb_commit"] = _commit()
        doc["meta"]["before"] = args.before_commit
        doc["meta"]["run_benchmarks"] = args.command
        doc["meta"]["prometheus_client"] = perf_report.prometheus_version(
            str(Path(args.venv) / "bin" / "python")
        )
        out.write_text(json.dumps(doc, indent=1))
        outputs.append(out)
    return outputs


def _git(*args: str) -> str:
    result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return result.stdout.strip()


def _commit() -> str:
    changed = _git("status", "--porcelain", "--", "src", "bench/lb_target.py")
    local = " with local changes" if changed else ""
    return (_git("rev-parse", "--short", "HEAD") or "?") + local


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--venv", default=sys.prefix, help="lb's virtualenv (default: this one)")
    parser.add_argument("--harness", type=Path, help="lbbench.py (default: ../shared/bench)")
    parser.add_argument("-d", "--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("-r", "--repeats", type=int, default=2, help="interleaved repeats")
    parser.add_argument("-c", "--connections", default="50,200")
    parser.add_argument("--name", default="performance", help="JSON file prefix in bench/results")
    parser.add_argument("--backend-ports", default="19001-19003", help="as the harness's")
    parser.add_argument("--lb-port", type=int, default=18080, help="as the harness's")
    parser.add_argument(
        "--harness-args", default="", help="more options for lbbench.py, e.g. '--quiet-wait 5'"
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 s: a smoke run")
    parser.add_argument("--report", action="store_true", help="only rewrite the doc's sections")
    parser.add_argument(
        "--before", default=BEFORE, help=f"the lb-before target's revision ({BEFORE}; none: skip)"
    )
    parser.add_argument("--workers2", action="store_true", help="also lb's 2-worker targets")
    parser.add_argument(
        "--granian", action="store_true", help="also lb-granian: granian serving lb.app:app"
    )
    parser.add_argument(
        "--venv-new",
        type=Path,
        help="also lb-proxy-new: lb proxy only from this venv (make install-new: .venv-3.13)",
    )
    parser.add_argument(
        "--skip", nargs="+", default=[], metavar="NAME", help="leave out these targets (haproxy)"
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy each Python target (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats, args.name = 3, 1, "quick"
    if args.profile is None:
        args.profile = not args.quick
    if args.harness is None:
        found = [p / "bench" / "lbbench.py" for p in HARNESS_PLACES]
        args.harness = next((p for p in found if p.exists()), found[0])
    args.harness = args.harness.resolve()
    args.command = shlex.join(["python", "bench/run_benchmarks.py", *argv])
    return args


def main() -> None:
    args = parse(sys.argv[1:])
    started = time.time()
    if args.report:
        outputs = [RESULTS / f"{args.name}-{name}.json" for name in PATHS.values()]
    else:
        before = None if args.before == "none" else prepare_before(args.before)
        args.before_commit = _git("rev-parse", "--short", args.before) if before else None
        specs = targets(
            before,
            args.workers2,
            FLOOR if FLOOR.exists() else None,
            args.granian,
            args.venv_new,
        )
        args.targets = [spec for spec in specs if _label(spec) not in args.skip]
        outputs = run(args)
    soaks = [RESULTS / f"soak-{profile}.json" for profile in ("proxy", "full")]
    perf_report.write_doc(outputs, soaks, DOC, args.venv)
    print(f"done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
