"""bench/run_benchmarks.py's targets and bench/perf_report.py's sections, on synthetic harness JSON.

Nothing here runs the harness: the JSON is made up in the shape lbbench.py writes (`meta`,
`summary` by connections then target, `profiles`), and the soak's in the shape bench/soak.py writes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("run_benchmarks"), importlib.import_module("perf_report")


def stats(rps: float, us: float, p99: float) -> dict[str, Any]:
    return {
        "n": 1,
        "n_all": 1,
        "rps_median": rps,
        "p50_ms": p99 / 3,
        "p99_ms": p99,
        "lb_cpu_pct": rps * us / 1e4,
        "lb_cpu_us_per_req": us,
        "foreign_cpu_pct_max": 3,
    }


def harness_doc(path: str, scale: float, profiles: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run where lb-proxy is 3.2x naive-aiohttp and lb-full 0.75x lb-proxy at `/`, 50."""
    per = {
        "nginx": stats(20000 * scale, 45, 5),
        "naive-aiohttp": stats(2000 * scale, 450, 50),
        "python-floor": stats(9000 * scale, 100, 8),
        "lb-before": stats(4000 * scale, 230, 12),
        "lb-proxy": stats(6400 * scale, 140, 10),
        "lb-full": stats(4800 * scale, 190, 14),
    }
    summary = {"50": per, "200": {k: {**v, "p99_ms": v["p99_ms"] * 4} for k, v in per.items()}}
    summary["200"]["lb-proxy"]["p99_ms"] = 100.0  # worse than lb-before's 48 ms at 200
    args = {"path": path, "big_size": 16384, "duration": 3, "repeats": 1, "connections": [50, 200]}
    meta = {
        "argv": ["shared/bench/lbbench.py", "--path", path],
        "started": "2026-12-03T17:00:00",
        "elapsed_s": 120,
        "args": args,
        "versions": {"cpus": 2, "venv": {"python": "3.11.7"}},
        "lb_commit": "abc1234",
        "before": "6467445",
    }
    return {"meta": meta, "summary": summary, "profiles": profiles or {}}


def soak(rss: list[float]) -> dict[str, Any]:
    rows = [
        {"requests": 250_000 * (i + 1), "rss_mib": {"123": value}, "peak_mib": {"123": value}}
        for i, value in enumerate(rss)
    ]
    return {"meta": {"connections": 1000}, "rows": rows}


def test_targets_rows_compute_each_target_from_the_run(bench: tuple[ModuleType, ...]) -> None:
    _, report = bench
    small, big = harness_doc("/", 1.0), harness_doc("/big", 0.5)
    soaks = {"proxy": soak([70.0, 70.5, 71.0, 72.0]), "full": soak([70.0, 71.0, 80.0, 90.0])}
    rows = {row[0]: row for row in report.targets_rows(small, big, soaks)}

    proxy = rows["proxy only, 1 worker, 50 connections, `/`"]
    assert proxy[1] == "≥ 3× naive aiohttp"
    assert proxy[2].startswith("**3.20×** (140 vs 450 µs/req; 6 400 vs 2 000 rps)")
    assert "python" in proxy[2].lower() and "4.50×" in proxy[2]  # the floor's ratio
    assert "lb-before 2.00×" in proxy[2]
    assert proxy[3] == "**yes**"

    full = rows["every feature on, 1 worker, 50 connections, `/`"]
    assert full[2].startswith("**0.75×**")
    assert full[3] == "**no**"

    p99 = rows["p99 latency, proxy only"]
    assert "`/` 50: 10.0 vs 12.0 ms" in p99[2]
    assert p99[3] == "**no** (`/` at 200, `/big` at 200)"

    memory = rows["memory, 1M requests from 1,000 keep-alive clients"]
    assert "proxy only 250k: 70.0, 500k: 70.5, 750k: 71.0, 1.00M: 72.0 MiB" in memory[2]
    assert memory[3] == "**no**"  # every feature on grew by 19.5 MiB
    assert "callgrind" in rows["the transport's instructions per request"][2]


def test_missing_targets_and_soaks_say_so(bench: tuple[ModuleType, ...]) -> None:
    _, report = bench
    small = harness_doc("/", 1.0)
    del small["summary"]["50"]["lb-before"], small["summary"]["200"]["lb-before"]
    rows = {row[0]: row for row in report.targets_rows(small, None, {})}
    assert rows["p99 latency, proxy only"][3] == "not measured"
    assert "run `bench/soak.py`" in rows["memory, 1M requests from 1,000 keep-alive clients"][2]
    assert "`/big` – and –" in rows["proxy only, 1 worker, 50 connections, `/`"][2]


def test_render_rebuilds_the_three_sections(bench: tuple[ModuleType, ...], tmp_path: Path) -> None:
    _, report = bench
    lines = [
        # the event loop alone, lb's protocol, the before code's proxy module, the transport
        "process 1;run (/usr/lib/python3.11/asyncio/runners.py:118) 10",
        "process 1;run (/usr/lib/python3.11/asyncio/runners.py:118);"
        "data_received (/work/main/src/lb/server.py:90) 50",
        "process 1;_forward (/work/main/bench/.before/6467445/src/lb/proxy.py:40) 30",
        "process 1;send_raw (/work/main/src/lb/transport/pool.py:12) 10",
        'process 2:"python /work/main/bench/lb_target.py" 5',  # no frame: not the bench shim's
    ]
    collapsed = tmp_path / "lb-before-c50.collapsed.txt"
    collapsed.write_text("\n".join(lines) + "\n")
    profiles = {"lb-before": {"collapsed": str(collapsed)}, "lb-proxy": {"collapsed": "/nowhere"}}
    docs = [harness_doc("/", 1.0, profiles), harness_doc("/big", 0.5)]
    text = "# Performance\n\nprose\n" + "".join(
        f"<!-- {name}:begin -->\nold\n<!-- {name}:end -->\nkept {name}\n"
        for name in ("results", "targets", "profile")
    )

    out = report.render(text, docs, {}, "/nonexistent-venv")

    assert "\nold\n" not in out and "prose" in out
    assert all(f"kept {name}" in out for name in ("results", "targets", "profile"))
    assert "| lb-proxy | 6 400 |" in out  # the results table
    assert "| proxy only, 1 worker, 50 connections, `/` | ≥ 3× naive aiohttp | **3.20×**" in out
    assert "| layer | lb-before (230 µs/req, 105 samples) |" in out  # lb-proxy's file is missing
    assert "| client side: lb's protocol" in out and "| 109.5 |" in out  # 50 of 105 samples
    assert "| proxy handler | 65.7 |" in out  # the before code's lb/proxy.py
    assert "| event loop (uvloop: epoll, reads) | 21.9 |" in out
    assert "| other (no frame of a layer: C code alone) | 11.0 |" in out
    assert report.render(out, docs, {}, "/nonexistent-venv") == out  # rebuilding is stable


def test_render_refuses_a_page_without_the_markers(bench: tuple[ModuleType, ...]) -> None:
    _, report = bench
    with pytest.raises(ValueError, match="targets:begin"):
        report.replace_section("no markers", "targets", "body")


def test_targets_are_the_issue_targets_interleaved(bench: tuple[ModuleType, ...]) -> None:
    run, _ = bench
    before = Path("/tmp/before/6467445")
    specs = run.targets(before, False, Path("/x/floor_proxy.py"))
    names = [spec.split(":")[0].split("name=")[-1].split(",")[0] for spec in specs]
    assert names == [
        "nginx",
        "haproxy",
        "naive-aiohttp",
        "python-floor",
        "lb-before",
        "lb-proxy",
        "lb-full",
    ]
    assert f"venv={before / 'venv'}," in specs[4]
    assert f"PYTHONPATH={before / 'src'} $LB_PYTHON {before / 'bench/lb_target.py'}" in specs[4]
    assert "profile=full" in specs[6]
    two = run.targets(None, True, None)
    assert [s for s in two if "-2w" in s] == two[-2:] and len(two) == 7
    more = run.targets(None, False, None, True, Path("/x/.venv-3.13"))
    assert "custom@name=lb-granian,server=granian,python=1:" in more[-2]
    assert more[-1].startswith("custom@name=lb-proxy-new,venv=/x/.venv-3.13,python=1:")


def test_options_profile_by_default_but_not_quick(bench: tuple[ModuleType, ...]) -> None:
    run, _ = bench
    assert run.parse([]).profile is True
    assert run.parse(["--quick"]).profile is False
    assert run.parse(["--quick", "--profile"]).profile is True
    assert run.parse(["--before", "none"]).before == "none"
    args = run.parse(["--quick"])
    args.targets = ["nginx"]
    command = run.harness_command(args, "/", Path("/tmp/out.json"))
    assert "--profile" not in command
    args.profile = True
    command = run.harness_command(args, "/big", Path("/tmp/out.json"))
    assert command[command.index("--profile") + 1].endswith("bench/results/profile-big")
