"""The repository's text as committed: no merge left half done."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)


def files(folder: Path) -> Iterator[Path]:
    """The files under `folder`, hidden folders left out: they are not the repository's
    (bench/.before/REV is an older commit's checkout with a virtualenv, for the lb-before target
    of bench/run_benchmarks.py)."""
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        yield from (Path(parent) / name for name in names)


def test_no_file_holds_merge_conflict_markers() -> None:
    texts = [
        p
        for folder in ("src", "tests", "docs", "scripts", "bench")
        for p in files(ROOT / folder)
        if p.suffix in {".py", ".md", ".sh", ".txt", ".js", ".css", ".html", ".yaml", ".toml"}
    ]
    texts += [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile"]
    assert [str(p.relative_to(ROOT)) for p in texts if MARKER.search(p.read_bytes())] == []
