"""Targeted cache-control fields (RFC 9213): `CDN-Cache-Control` and the like, which a cache that
honours them reads instead of Cache-Control and Expires.

A targeted field is a Structured Field Dictionary (RFC 8941 §3.2). One that does not parse, or
whose known directives have values of the wrong type, is ignored as a whole (RFC 9213 §2.1), and
the next field on the list, or Cache-Control, decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lb.cache.directives import MAX_DELTA, Directives

Headers = Sequence[tuple[bytes, bytes]]

DEFAULT_TARGETED_FIELDS = ("cdn-cache-control",)

# Directives whose value must be a non-negative Integer (RFC 9213 §2.1, RFC 9111 §5.2.2).
_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_INTEGER_OR_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_BYTES = re.compile(r":[A-Za-z0-9+/=]*:")
_OWS = " \t"

_Item = int | float | str | bool | bytes | None  # None: an inner list (no directive takes one)


class _Invalid(Exception):
    pass


class _Parser:
    """RFC 8941 §4.2 dictionary parsing, reduced to what directives need: member values are kept
    (inner lists as None); parameters are checked and dropped."""

    __slots__ = ("text", "at")

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def dictionary(self) -> dict[str, _Item]:
        text = self.text
        out: dict[str, _Item] = {}
        self.skip(" ")
        if self.at == len(text):
            return out
        while True:
            key = self.key()
            value: _Item = True
            if self.peek() == "=":
                self.at += 1
                if self.peek() == "(":
                    self.inner_list()
                    value = None
                else:
                    value = self.bare_item()
            self.parameters()
            out[key] = value  # a later member of the same name overrides (§4.2.2)
            self.skip(_OWS)
            if self.at == len(text):
                return out
            if self.peek() != ",":
                raise _Invalid
            self.at += 1
            self.skip(_OWS)
            if self.at == len(text):
                raise _Invalid  # a trailing comma

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.at += 1

    def match(self, pattern: re.Pattern[str]) -> str:
        found = pattern.match(self.text, self.at)
        if found is None:
            raise _Invalid
        self.at = found.end()
        return found.group()

    def key(self) -> str:
        return self.match(_KEY)

    def parameters(self) -> None:
        while self.peek() == ";":
            self.at += 1
            self.skip(" ")
            self.key()
            if self.peek() == "=":
                self.at += 1
                self.bare_item()

    def inner_list(self) -> None:
        self.at += 1
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.at += 1
                self.parameters()
                return
            self.bare_item()
            self.parameters()
            if self.peek() not in (" ", ")"):
                raise _Invalid

    def bare_item(self) -> _Item:
        char = self.peek()
        if char == "-" or char.isdigit():
            return self.number()
        if char == '"':
            return self.string()
        if char == ":":
            return self.match(_BYTES).encode("ascii")
        if char == "?":
            flag = self.text[self.at : self.at + 2]
            if flag not in ("?0", "?1"):
                raise _Invalid
            self.at += 2
            return flag == "?1"
        return self.match(_TOKEN)

    def number(self) -> int | float:
        text = self.match(_INTEGER_OR_DECIMAL)
        whole, dot, fraction = text.lstrip("-").partition(".")
        if not whole.isascii() or (dot and (len(whole) > 12 or len(fraction) > 3)):
            raise _Invalid
        if not dot and len(whole) > 15:
            raise _Invalid
        return float(text) if dot else int(text)

    def string(self) -> str:
        out = []
        self.at += 1
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            self.at += 1
            if char == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    raise _Invalid
                out.append(escaped)
                self.at += 1
            elif char == '"':
                return "".join(out)
            elif not " " <= char <= "~":
                raise _Invalid
            else:
                out.append(char)
        raise _Invalid  # unterminated


def parse_targeted(values: Sequence[bytes]) -> Directives | None:
    """One targeted field's lines as cache directives, or None when the field is invalid (and
    therefore ignored) or empty."""
    try:
        text = ",".join(v.decode("ascii") for v in values)
        members = _Parser(text).dictionary()
    except (_Invalid, UnicodeDecodeError):
        return None
    out: Directives = {}
    for name, value in members.items():
        if name in _INTEGER_DIRECTIVES:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return None  # a wrong type invalidates the whole field
            out[name] = str(min(value, MAX_DELTA))
        elif value is False:
            continue  # `no-store=?0`: the directive is absent
        elif value is True:
            out[name] = None
        elif isinstance(value, str):
            out[name] = value  # private="Set-Cookie", a token argument
        else:
            out[name] = ""  # another type: the directive is present, its argument unusable
    return out or None


def select_directives(headers: Headers, targeted: Sequence[str]) -> tuple[str, Directives] | None:
    """The first targeted field (in `targeted` order) with a valid, non-empty value: its name and
    directives. None: Cache-Control and Expires decide (RFC 9213 §2.1)."""
    for name in targeted:
        wanted = name.encode("latin-1")
        lines = [v for n, v in headers if n == wanted]
        if lines:
            directives = parse_targeted(lines)
            if directives is not None:
                return name, directives
    return None
