"""Every program a test starts is in scripts/system-programs.txt, which system-deps.sh installs.

On a fresh machine only what that registry lists is there; a test that starts anything else
passes on a developer's machine and fails in CI. This scans the test sources for the ways a test
starts a program and names any that the registry lacks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from programs import REGISTRY, ProgramMissing, listed, program

TESTS = Path(__file__).resolve().parents[1]
SPAWNERS = {"run", "Popen", "call", "check_call", "check_output", "create_subprocess_exec"}
INTERPRETERS = {"sys.executable", "python", "python3"}


def started_programs(source: str) -> Iterator[tuple[int, str]]:
    """(line, program) for each program the source names as something it starts."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for prefix in ("/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"):
                name = node.value.removeprefix(prefix)
                if node.value.startswith(prefix) and name and "/" not in name:
                    yield node.lineno, name
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        first = node.args[0]
        if name in {"which", "program"} and isinstance(first, ast.Constant):
            yield node.lineno, str(first.value)
        elif name in SPAWNERS:
            if isinstance(first, ast.List | ast.Tuple) and first.elts:
                first = first.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value.split()[0]


def unlisted(root: Path, paths: list[Path]) -> list[str]:
    programs = listed()
    return [
        f"{path.relative_to(root)}:{line}: starts {name}, which {REGISTRY.name} does not list"
        for path in paths
        for line, name in sorted(started_programs(path.read_text()))
        if name not in programs and name not in INTERPRETERS
    ]


def test_every_program_a_test_starts_is_listed() -> None:
    sources = sorted(TESTS.rglob("*.py"))
    assert unlisted(TESTS, sources) == []
    found = {name for path in sources for _, name in started_programs(path.read_text())}
    # The scan sees the suite's real dependencies (else it could pass by finding nothing).
    assert {"redis-server", "nginx", "wrk", "chromium", "openssl"} <= found


def test_an_unlisted_program_is_named(tmp_path: Path) -> None:
    source = tmp_path / "test_example.py"
    source.write_text(
        "import shutil, subprocess\n"
        "shutil.which('haproxy')\n"
        "subprocess.run(['varnishd', '-F'])\n"
        "subprocess.Popen([sys.executable, '-m', 'lb'])\n"
        "BINARY = '/usr/sbin/squid'\n"
        "program('redis-server')\n"
    )
    problems = [p.split(": ", 1)[1] for p in unlisted(tmp_path, [source])]
    assert problems == [
        "starts haproxy, which system-programs.txt does not list",
        "starts varnishd, which system-programs.txt does not list",
        "starts squid, which system-programs.txt does not list",
    ]


def test_program_refuses_an_unlisted_name() -> None:
    name = "haproxy"  # a variable, so the scan above does not count this call
    with pytest.raises(ProgramMissing, match="haproxy: a test starts it but"):
        program(name)
