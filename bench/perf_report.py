"""The sections of docs/performance.md that bench/run_benchmarks.py writes, from its JSON.

Three sections, each between `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers, rebuilt whole
every time (the rest of the page is prose, kept as it is):

* `results`: the harness's tables for `/` and `/big`, the machine, the versions, the commands;
* `targets`: issue 19's targets, each "required | measured | holds?", computed from the same run
  and from the soak's JSON (bench/soak.py);
* `profile`: lb's time by layer (bench/profile_layers.py) before and after, in µs per request.

Everything here reads JSON and writes text; nothing runs a benchmark.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

import profile_layers

Doc = dict[str, Any]

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
NAIVE, FLOOR, BEFORE = "naive-aiohttp", "python-floor", "lb-before"
PROXY, FULL = "lb-proxy", "lb-full"
PROFILED = (BEFORE, PROXY, FULL)
# The soak's rows are read as flat when RSS grew less than this from the 2nd to the 4th 250k: a
# leak of 10 bytes per request would grow it by ~5 MiB over those 500k requests.
FLAT_MIB = 5.0
MEMORY_LIMIT_MIB = 120 * 1000 * 1000 / 2**20  # the 120 MB


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"docs/performance.md has no {begin} ... {end} markers")
    return f"{head}{begin}\n{body.strip()}\n\n{end}{tail}"


# ---------------------------------------------------------------- results


def table(doc: Doc) -> str:
    lines = []
    for conns, per in doc["summary"].items():
        aiohttp = per.get(NAIVE, {}).get("rps_median")
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


def prometheus_version(venv_python: str) -> str:
    """prometheus-client's version in lb's venv (the harness records the others)."""
    code = "import importlib.metadata as m; print(m.version('prometheus-client'))"
    try:
        result = subprocess.run([venv_python, "-c", code], capture_output=True, text=True)
    except OSError:
        return "?"
    return result.stdout.strip() or "?"


def machine(doc: Doc, venv_python: str) -> str:
    meta, v = doc["meta"], doc["meta"]["versions"]
    venv = v.get("venv", {}) if isinstance(v.get("venv"), dict) else {}
    prometheus = meta.get("prometheus_client") or prometheus_version(venv_python)
    packages = ", ".join(
        f"{name} {venv.get(name)}"
        for name in ("uvicorn", "uvloop", "httptools", "httpx", "aiohttp")
    )
    before = f"; lb-before is {meta['before']}" if meta.get("before") else ""
    load = [round(x, 2) for x in meta.get("loadavg_at_end", [])]
    return (
        f"- machine: {v.get('cpus')} vCPU {v.get('cpu_model', '?')}, kernel {v.get('kernel')}, "
        f"{platform.system()}\n"
        f"- {v.get('nginx')}; {v.get('haproxy')}; {v.get('wrk')}\n"
        f"- Python {venv.get('python')}, {packages}, prometheus-client {prometheus}\n"
        f"- lb commit {meta.get('lb_commit', '?')}{before}; started {meta.get('started')}; load "
        f"average at the end of the first run {load}\n"
    )


def results_section(docs: list[Doc], venv: str) -> str:
    took = sum(doc["meta"]["elapsed_s"] for doc in docs)
    command = docs[0]["meta"].get("run_benchmarks", "python bench/run_benchmarks.py")
    parts = [f"Produced by `{command}` in {took / 60:.0f} min (harness commands below).\n"]
    for doc in docs:
        args = doc["meta"]["args"]
        size = "~100 B body" if args["path"] == "/" else f"{args['big_size']} B body"
        parts.append(
            f"### `{args['path']}` ({size}), {args['duration']} s × {args['repeats']} repeats\n"
        )
        parts.append(table(doc))
    parts.append("Machine and versions:\n")
    parts.append(machine(docs[0], str(Path(venv) / "bin" / "python")))
    parts.append("Harness commands (run from the folder above the project):\n")
    parts.append("```sh")
    parts.extend(shlex.join(["python3", *doc["meta"]["argv"]]) for doc in docs)
    parts.append("```\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- targets


def _get(doc: Doc | None, conns: int, label: str, key: str) -> float | None:
    if doc is None:
        return None
    value = doc["summary"].get(str(conns), {}).get(label, {}).get(key)
    return float(value) if value is not None else None


def _ratio(doc: Doc | None, conns: int, a: str, b: str) -> float | None:
    x, y = _get(doc, conns, a, "rps_median"), _get(doc, conns, b, "rps_median")
    return x / y if x is not None and y else None


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _n(value: float | None) -> str:
    return "–" if value is None else f"{round(value):,}".replace(",", " ")


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value < 100 else _n(value)


def _holds(value: float | None, ok: bool) -> str:
    return "not measured" if value is None else ("**yes**" if ok else "**no**")


def _ratio_row(small: Doc | None, big: Doc | None, a: str, b: str, floor: float) -> list[str]:
    """A ratio of rps target: the `/` 50-connection ratio in bold, the others as context."""
    main = _ratio(small, 50, a, b)
    rps = f"{_n(_get(small, 50, a, 'rps_median'))} vs {_n(_get(small, 50, b, 'rps_median'))} rps"
    us = f"{_n(_get(small, 50, a, 'lb_cpu_us_per_req'))} vs "
    us += f"{_n(_get(small, 50, b, 'lb_cpu_us_per_req'))} µs/req"
    measured = f"**{_x(main)}** ({us}; {rps}); 200 connections {_x(_ratio(small, 200, a, b))}; "
    measured += f"`/big` {_x(_ratio(big, 50, a, b))} and {_x(_ratio(big, 200, a, b))}"
    return [measured, _holds(main, main is not None and main >= floor)]


def targets_rows(small: Doc | None, big: Doc | None, soaks: dict[str, Doc]) -> list[list[str]]:
    """Issue 19's targets: [target, required, measured, holds?] each."""
    proxy = _ratio_row(small, big, PROXY, NAIVE, 3.0)
    context = []
    if _get(small, 50, FLOOR, "rps_median") is not None:
        context.append(
            f"the Python floor (`bench/floor_proxy.py`, the ceiling for a Python proxy) "
            f"{_x(_ratio(small, 50, FLOOR, NAIVE))} at "
            f"{_n(_get(small, 50, FLOOR, 'lb_cpu_us_per_req'))} µs/req"
        )
    if _get(small, 50, BEFORE, "rps_median") is not None:
        context.append(
            f"lb-before {_x(_ratio(small, 50, BEFORE, NAIVE))} at "
            f"{_n(_get(small, 50, BEFORE, 'lb_cpu_us_per_req'))} µs/req"
        )
    if context:
        proxy[0] += "; in the same run: " + ", ".join(context)
    full = _ratio_row(small, big, FULL, PROXY, 0.8)
    if _ratio(small, 50, f"{FULL}-2w", f"{PROXY}-2w") is not None:
        full[0] += f"; 2 workers {_x(_ratio(small, 50, f'{FULL}-2w', f'{PROXY}-2w'))}"
    return [
        ["proxy only, 1 worker, 50 connections, `/`", "≥ 3× naive aiohttp", *proxy],
        ["every feature on, 1 worker, 50 connections, `/`", "≥ 0.8× proxy only", *full],
        ["p99 latency, proxy only", "≤ lb-before's at 50 and 200 connections, `/` and `/big`",
         *_p99_row(small, big)],
        ["memory, 1M requests from 1,000 keep-alive clients", "flat: RSS < 120 MB per worker, "
         f"< {FLAT_MIB:.0f} MiB growth from the 2nd to the 4th 250k", *_memory_row(soaks)],
        ["the transport's instructions per request", "≤ before",
         "not measured by this script (callgrind, not timing): `bench/transport_instructions.py`, "
         "see [The transport](#the-transports-instructions-per-request)", "see there"],
    ]  # fmt: skip


def _p99_row(small: Doc | None, big: Doc | None) -> list[str]:
    cells, worse, seen = [], [], False
    for path, doc in (("`/`", small), ("`/big`", big)):
        for conns in (50, 200):
            after, before = _get(doc, conns, PROXY, "p99_ms"), _get(doc, conns, BEFORE, "p99_ms")
            if after is None or before is None:
                continue
            seen = True
            cells.append(f"{path} {conns}: {_ms(after)} vs {_ms(before)} ms")
            if after > before:
                worse.append(f"{path} at {conns}")
    if not seen:
        return ["– (no lb-before in this run)", "not measured"]
    return ["; ".join(cells), "**yes**" if not worse else "**no** (" + ", ".join(worse) + ")"]


def _memory_row(soaks: dict[str, Doc]) -> list[str]:
    if not soaks:
        return ["no soak results: run `bench/soak.py` (and `--profile full`)", "not measured"]
    parts, ok = [], True
    for profile, soak in soaks.items():
        rss = [max(row["rss_mib"].values()) for row in soak["rows"]]
        steps = ", ".join(
            f"{_k(row['requests'])}: {value:.1f}"
            for value, row in zip(rss, soak["rows"], strict=True)
        )
        parts.append(f"{'proxy only' if profile == 'proxy' else 'every feature on'} {steps} MiB")
        grew = rss[-1] - rss[1] if len(rss) >= 4 else None
        ok = ok and grew is not None and grew < FLAT_MIB and max(rss) < MEMORY_LIMIT_MIB
    files = ", ".join(f"`bench/results/soak-{profile}.json`" for profile in soaks)
    return [
        f"RSS after each step (requests: MiB), {'; '.join(parts)} ({files})",
        "**yes**" if ok else "**no**",
    ]


def _k(requests: int) -> str:
    return f"{requests / 1000:.0f}k" if requests < 999_500 else f"{requests / 1e6:.2f}M"


def targets_section(small: Doc | None, big: Doc | None, soaks: dict[str, Doc]) -> str:
    lines = ["| target | required | measured | holds? |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in targets_rows(small, big, soaks)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- profile


def profile_section(small: Doc | None) -> str:
    """lb's time by layer at `/`, in µs per request, for lb-before, lb-proxy and lb-full."""
    profiles = (small or {}).get("profiles") or {}
    columns: list[tuple[str, dict[str, float]]] = []
    for label in PROFILED:
        path = profiles.get(label, {}).get("collapsed")
        conns = (small or {}).get("meta", {}).get("args", {}).get("connections", [50])[0]
        us = _get(small, conns, label, "lb_cpu_us_per_req")
        if path is None or not Path(path).exists() or us is None:
            continue
        found, samples = profile_layers.shares(path)
        title = f"{label} ({_n(us)} µs/req, {_n(samples)} samples)"
        columns.append((title, {name: share * us for name, share in found.items()}))
    if not columns:
        return "No profile in this run (`--no-profile`, or `--quick` without `--profile`).\n"
    lines = [
        "| layer | " + " | ".join(title for title, _ in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for name in profile_layers.ORDER:
        if any(name in values for _, values in columns):
            cells = [f"{values[name]:.1f}" if name in values else "–" for _, values in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the page


def render(text: str, docs: list[Doc], soaks: dict[str, Doc], venv: str) -> str:
    """The page with its three sections rebuilt from `docs` (`/`, then `/big` if run)."""
    by_path = {doc["meta"]["args"]["path"]: doc for doc in docs}
    small, big = by_path.get("/"), by_path.get("/big")
    text = replace_section(text, "results", results_section(docs, venv))
    text = replace_section(text, "targets", targets_section(small, big, soaks))
    return replace_section(text, "profile", profile_section(small))


def write_doc(outputs: list[Path], soak_files: list[Path], doc: Path, venv: str) -> None:
    docs = [json.loads(out.read_text()) for out in outputs]
    soaks = {
        path.stem.removeprefix("soak-"): json.loads(path.read_text())
        for path in soak_files
        if path.exists()
    }
    doc.write_text(render(doc.read_text(), docs, soaks, venv))
    print(f"wrote {doc}")
