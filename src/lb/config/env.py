"""`${NAME}` substitution in config strings, done on the parsed data before validation.

Only string values are expanded, never keys, and the result is not re-parsed as YAML: a value stays
a string whatever the variable holds. `$${` is a literal `${`; an unset variable is empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lb.config.fields import Problems, child, item

_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand_string(text: str, environ: Mapping[str, str], path: str, problems: Problems) -> str:
    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        body = match["body"]
        if body is None:
            problems.add(path, "unclosed '${' (write $${ for a literal '${')")
            return whole
        if not _NAME.fullmatch(body):
            shown = whole if len(whole) <= 40 else whole[:37] + "..."
            problems.add(
                path,
                f"bad variable reference {shown!r}: expected ${{NAME}} "
                "(write $${ for a literal '${')",
            )
            return whole
        return environ.get(body, "")

    return _REFERENCE.sub(replace, text)


def expand_env(value: Any, environ: Mapping[str, str], problems: Problems, path: str = "") -> Any:
    """A copy of `value` with every string expanded; the input is left untouched."""
    if isinstance(value, str):
        return _expand_string(value, environ, path or "config", problems) if "$" in value else value
    if isinstance(value, Mapping):
        return {k: expand_env(v, environ, problems, child(path, k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [expand_env(v, environ, problems, item(path, i)) for i, v in enumerate(value)]
    return value
