"""load_config on files: unreadable, empty, wrong root, YAML syntax errors, duplicate keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lb.config import ConfigError, load_config


def problems_of(source: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return info.value.problems


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    (line,) = problems_of(str(path))
    assert line == f"config: cannot read {path}: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (line,) = problems_of(tmp_path)
    assert line.startswith(f"config: cannot read {tmp_path}: ")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert problems_of(path) == ["config: empty file, expected a mapping with 'pools'"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("- a\n- b\n", "config: expected a mapping, got list"),
        ("hello\n", "config: expected a mapping, got 'hello'"),
        ("42\n", "config: expected a mapping, got 42"),
        ("admin: {}\n", "pools: required"),
    ],
)
def test_file_with_wrong_root(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert problems_of(path) == [line]


@pytest.mark.parametrize(
    "text",
    [
        "pools:\n  web: {backends: [http://a\n",
        "pools:\n  web:\n    backends: [a]\n   bad: indent\n",
        "pools: [\n",
        "\tpools: {}\n",
    ],
)
def test_yaml_syntax_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    (line,) = problems_of(path)
    assert re.fullmatch(r"config: invalid YAML at line \d+, column \d+: \S.*", line), line


def test_yaml_syntax_error_position(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pools:\n  web:\n    backends: [a\n  x: 1\n")
    (line,) = problems_of(path)
    assert line.startswith("config: invalid YAML at line 4, column ")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pools:\n  web: {backends: [http://a]}\n  web: {backends: [http://b]}\n")
    assert problems_of(path) == ["config: invalid YAML at line 3, column 3: duplicate key 'web'"]


def test_yaml_merge_keys_may_repeat(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "base: &base {backends: [http://a], strategy: random}\n"
        "pools:\n  web: {<<: *base, strategy: round_robin}\n"
    )
    assert problems_of(path) == ["base: unknown key"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"pools: \xff\xfe\n")
    (line,) = problems_of(path)
    assert line.startswith(f"config: cannot read {path}: not UTF-8 text")


def test_non_string_source_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        load_config(42)  # type: ignore[arg-type]
