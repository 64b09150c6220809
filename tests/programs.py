"""The system programs tests start, resolved through the one registry the installer reads.

`scripts/system-programs.txt` lists every program a test may start; `scripts/system-deps.sh` (run
by `make test`) installs what it lists. A test asks for a program with `program(NAME)`: a name the
registry does not list is an error naming it, so a new dependency cannot hide behind a developer's
machine that happens to have it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REGISTRY = Path(__file__).resolve().parents[1] / "scripts" / "system-programs.txt"
# Debian keeps daemons such as nginx in sbin, which a user's PATH may lack.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def listed() -> dict[str, str]:
    """Command name -> Debian package, as the registry lists them."""
    programs: dict[str, str] = {}
    for line in REGISTRY.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            programs[fields[0]] = fields[1] if len(fields) > 1 else fields[0]
    return programs


class ProgramMissing(RuntimeError):
    pass


def program(name: str) -> str:
    """The path of a listed program; raises naming it when it is unlisted or not installed."""
    programs = listed()
    if name not in programs:
        raise ProgramMissing(
            f"{name}: a test starts it but scripts/system-programs.txt does not list it"
        )
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        raise ProgramMissing(
            f"{name} is not installed: run scripts/system-deps.sh"
            f" (apt-get install {programs[name]})"
        )
    return path
