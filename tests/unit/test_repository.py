"""The repository's text as committed: no merge left half done."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)


def test_no_file_holds_merge_conflict_markers() -> None:
    texts = [
        p
        for folder in ("src", "tests", "docs", "scripts", "bench")
        for p in (ROOT / folder).rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".md", ".sh", ".txt", ".js", ".css", ".html", ".yaml", ".toml"}
    ]
    texts += [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile"]
    assert [str(p.relative_to(ROOT)) for p in texts if MARKER.search(p.read_bytes())] == []
