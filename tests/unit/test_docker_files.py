"""The Dockerfile and deploy/docker/ hold together: what the image copies exists and is not
ignored, the container config is valid, and compose waits longer than lb drains."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from lb.config import load_config
from lb.config.units import parse_duration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pattern) for pattern in patterns for p in prefixes)


def test_what_the_image_copies_exists_and_is_not_dockerignored() -> None:
    sources = [
        source
        for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), source


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    assert DOCKERFILE.index("-r /tmp/requirements.txt") < DOCKERFILE.index("COPY src ")
    assert "--no-deps ." in DOCKERFILE
    assert 'CMD ["lb", "healthcheck"' in DOCKERFILE


def test_the_container_config_is_valid_and_compose_outwaits_the_graceful_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in (1, 2, 3):
        monkeypatch.setenv(f"BACKEND_{n}", f"web{n}:80")
    monkeypatch.delenv("LB_ADMIN_TOKEN", raising=False)
    config = load_config(str(ROOT / "deploy/docker/lb.yaml"))
    assert [b.url for b in config.pools["web"].backends] == [
        "http://web1:80",
        "http://web2:80",
        "http://web3:80",
    ]
    assert config.admin.listen == ("127.0.0.1", 9901)
    compose = yaml.safe_load((ROOT / "deploy/docker/compose.yaml").read_text())
    lb = compose["services"]["lb"]
    assert parse_duration(lb["stop_grace_period"]) > config.server.graceful_timeout
    assert set(lb["environment"]) >= {"BACKEND_1", "BACKEND_2", "BACKEND_3"}
