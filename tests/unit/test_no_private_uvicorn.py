"""lb runs on any uvicorn of its supported range (pyproject.toml) because it uses uvicorn only
through its public surface: its own HTTP protocol is handed over with the `http=` setting, and
nothing of lb imports uvicorn's protocols or its underscore modules."""

from __future__ import annotations

import ast
from pathlib import Path

import lb

SOURCE = Path(lb.__file__).parent
FORBIDDEN = ("uvicorn.protocols", "uvicorn._", "uvicorn.server")  # uvicorn.Server is top-level


def _imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_lb_imports_no_private_uvicorn_module() -> None:
    found = {
        f"{path.relative_to(SOURCE)}: {name}"
        for path in SOURCE.rglob("*.py")
        for name in _imported(path)
        if name.startswith(FORBIDDEN)
    }
    assert not found


def test_the_check_sees_such_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol\n")
    assert any(name.startswith(FORBIDDEN) for name in _imported(sample))
