"""Validation of a route's traffic control (SPEC 12): `timeouts`, `request_headers`,
`response_headers`, `redirect`, and matching on `methods`, `headers` and `cookies`.

Templates (`{host}`, ...) are split and regexes compiled here, once at load, so a bad one is a
config error with its key path and a request only fills placeholders in.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection, Mapping
from typing import Any

from lb.config.fields import (
    Invalid,
    Problems,
    Section,
    child,
    describe,
    item,
    suggest,
    to_duration,
    to_str,
)
from lb.config.model import (
    HOP_BY_HOP_FIELDS,
    HeaderRulesConfig,
    RedirectConfig,
    RouteTimeoutConfig,
    Template,
    ValueMatch,
)
from lb.config.pools import TOKEN

HEADER_PLACEHOLDERS = ("client_ip", "request_id", "host", "scheme")
REDIRECT_PLACEHOLDERS = ("host", "path", "scheme")
REDIRECT_STATUSES = (301, 302, 307, 308)

# `{{` and `}}` are literal braces, `{name}` a placeholder; any other brace is a mistake.
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# What a config may write in a header value: visible ASCII, spaces and tabs inside (RFC 9110 5.5).
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")
# Framing and lb's own request id (SPEC 3) are lb's to write, in both directions.
_REFUSED = {"content-length": "framing is lb's", "x-request-id": "lb's request id (SPEC 3)"}


def to_template(allowed: tuple[str, ...]) -> Any:
    def convert(value: Any) -> Template:
        text = value if isinstance(value, str) else to_str(value)
        parts: list[str] = []
        literal: list[str] = []
        end = 0
        for found in _TEMPLATE.finditer(text):
            literal.append(text[end : found.start()])
            end = found.end()
            token = found.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            name = found.group(1)
            if name is None:
                raise Invalid(f"unmatched {token!r} in {describe(value)} (write {token * 2})")
            if name not in allowed:
                known = ", ".join("{" + a + "}" for a in allowed)
                raise Invalid(
                    f"unknown placeholder {{{name}}}{suggest(name, allowed)}; known: {known}"
                )
            parts += ["".join(literal), name]
            literal = []
        literal.append(text[end:])
        parts.append("".join(literal))
        return Template(text, tuple(parts))

    return convert


def _to_value(value: Any) -> Template:
    """A header value template; its literal text must be a valid field value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # `X-Version: 2` means the text "2"
    template: Template = to_template(HEADER_PLACEHOLDERS)(value)
    literal = "".join(template.parts[::2])
    joined = "x".join(template.parts[::2])  # placeholders stand for visible text
    if literal and _FIELD_VALUE.fullmatch(joined) is None:
        raise Invalid(
            f"invalid header value {describe(value)}: visible ASCII only, spaces inside, "
            "no line breaks"
        )
    return template


def _to_name(direction: str, verb: str) -> Any:
    def convert(value: Any) -> str:
        text = to_str(value)
        if TOKEN.fullmatch(text) is None:
            raise Invalid(f"invalid header name {describe(value)}")
        name = text.lower()
        if name in HOP_BY_HOP_FIELDS:
            raise Invalid(f"{text} is hop-by-hop: lb never forwards it")
        if name in _REFUSED:
            raise Invalid(f"{text} cannot be changed: {_REFUSED[name]}")
        # A request has exactly one Host, which the backend needs: replaced, never added or removed.
        if name == "host" and direction == "request" and verb != "set":
            raise Invalid("Host may only be set (a request has exactly one)")
        return name

    return convert


def _read_pairs(s: Section, key: str, direction: str) -> tuple[tuple[str, Template], ...]:
    value = s.raw(key)
    if value is None:
        return ()
    path = s.key_path(key)
    if not isinstance(value, Mapping):
        s.error(key, f"expected a mapping of header names to values, got {describe(value)}")
        return ()
    out: dict[str, Template] = {}
    to_name = _to_name(direction, key)
    for raw_name, raw_value in value.items():
        where = child(path, raw_name)
        try:
            name = to_name(raw_name)
            template = _to_value(raw_value)
        except Invalid as exc:
            s.problems.add(where, str(exc))
            continue
        if name in out:
            s.problems.add(where, "named twice (header names are case-insensitive)")
        out[name] = template
    return tuple(out.items())


def read_header_rules(
    value: Any, path: str, problems: Problems, direction: str
) -> HeaderRulesConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping with set, add or remove, got {describe(value)}")
        return None
    s = Section(value, path, problems, ("set", "add", "remove"))
    remove: list[str] = []
    raw_remove = s.raw("remove")
    if raw_remove is not None:
        if not isinstance(raw_remove, list | tuple):
            s.error("remove", f"expected a list of header names, got {describe(raw_remove)}")
        else:
            to_name = _to_name(direction, "remove")
            for index, raw in enumerate(raw_remove):
                try:
                    remove.append(to_name(raw))
                except Invalid as exc:
                    problems.add(item(s.key_path("remove"), index), str(exc))
    rules = HeaderRulesConfig(
        set=_read_pairs(s, "set", direction),
        add=_read_pairs(s, "add", direction),
        remove=tuple(dict.fromkeys(remove)),
    )
    if not (rules.set or rules.add or rules.remove):
        return None
    return rules


def read_route_timeouts(value: Any, path: str, problems: Problems) -> RouteTimeoutConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping with read and/or connect, got {describe(value)}")
        return None
    s = Section(value, path, problems, ("connect", "read"))
    positive = to_duration(positive=True)
    timeouts = RouteTimeoutConfig(
        connect=s.read("connect", None, positive), read=s.read("read", None, positive)
    )
    return timeouts if timeouts != RouteTimeoutConfig() else None


def _to_redirect_target(value: Any) -> Template:
    template: Template = to_template(REDIRECT_PLACEHOLDERS)(value)
    if any(c.isspace() or not c.isprintable() for c in template.text):
        raise Invalid(f"invalid URL {describe(value)}: no spaces or control characters")
    head = template.parts[0]
    # Absolute (`https://...`, `{scheme}://...`) or a path on the same host.
    if not head.startswith("/") and not (head == "" and template.parts[1] == "scheme"):
        scheme = urllib.parse.urlsplit(head).scheme if "://" in head else ""
        if scheme not in ("http", "https"):
            raise Invalid(
                f"expected an http(s):// URL or a path starting with '/', got {describe(value)}"
            )
    return template


def _to_redirect_status(value: Any) -> int:
    if value in REDIRECT_STATUSES and not isinstance(value, bool):
        return int(value)
    listed = ", ".join(map(str, REDIRECT_STATUSES))
    raise Invalid(f"expected one of {listed}, got {describe(value)}")


def read_redirect(value: Any, path: str, problems: Problems) -> RedirectConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping with 'to' and 'status', got {describe(value)}")
        return None
    s = Section(value, path, problems, ("to", "status"))
    to = s.require("to", _to_redirect_target)
    status = s.read("status", 301, _to_redirect_status)
    return None if to is None else RedirectConfig(to=to, status=status)


def _to_method(value: Any) -> str:
    text = to_str(value)
    if TOKEN.fullmatch(text) is None:
        raise Invalid(f"invalid method {describe(value)}")
    if text.upper() != text:  # methods are case-sensitive (RFC 9110 9.1): "get" is not GET
        raise Invalid(
            f"methods are upper-case, got {describe(value)} (did you mean {text.upper()!r}?)"
        )
    return text


def read_methods(value: Any, path: str, problems: Problems) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list | tuple) or not value:
        problems.add(path, f"expected a list of methods, e.g. [GET, HEAD], got {describe(value)}")
        return frozenset()
    methods: set[str] = set()
    for index, raw in enumerate(value):
        try:
            methods.add(_to_method(raw))
        except Invalid as exc:
            problems.add(item(path, index), str(exc))
    return frozenset(methods)


def _to_match(value: Any) -> ValueMatch:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Invalid(f"expected a value or '~REGEX', got {describe(value)}")
    if value.startswith("~"):
        try:
            return ValueMatch(pattern=re.compile(value[1:]))
        except re.error as exc:
            raise Invalid(f"invalid regular expression {describe(value[1:])}: {exc}") from None
    return ValueMatch(exact=value)


def read_matches(
    value: Any, path: str, problems: Problems, what: str, names: re.Pattern[str] = TOKEN
) -> tuple[tuple[str, ValueMatch], ...]:
    """`headers` or `cookies`: NAME -> exact value or `~REGEX`; header names lower-cased."""
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        problems.add(path, f"expected a mapping of {what} names to values, got {describe(value)}")
        return ()
    out: list[tuple[str, ValueMatch]] = []
    for raw_name, raw_value in value.items():
        where = child(path, raw_name)
        if not isinstance(raw_name, str) or names.fullmatch(raw_name) is None:
            problems.add(where, f"invalid {what} name")
            continue
        try:
            match = _to_match(raw_value)
        except Invalid as exc:
            problems.add(where, str(exc))
            continue
        out.append((raw_name.lower() if what == "header" else raw_name, match))
    return tuple(out)


def check_redirect_keys(s: Section, present: Collection[str]) -> None:
    """Keys that would do nothing on a redirect route, which answers without a backend."""
    for key in present:
        if s.has(key):
            s.error(key, "a redirect route answers without a backend: remove this key")


def read_traffic(s: Section) -> dict[str, Any]:
    """The SPEC 12 keys of the route in `s`, as RouteConfig keyword arguments."""
    problems = s.problems
    return {
        "timeouts": read_route_timeouts(s.raw("timeouts"), s.key_path("timeouts"), problems),
        "request_headers": read_header_rules(
            s.raw("request_headers"), s.key_path("request_headers"), problems, "request"
        ),
        "response_headers": read_header_rules(
            s.raw("response_headers"), s.key_path("response_headers"), problems, "response"
        ),
        "redirect": read_redirect(s.raw("redirect"), s.key_path("redirect"), problems),
        "methods": read_methods(s.raw("methods"), s.key_path("methods"), problems),
        "headers": read_matches(s.raw("headers"), s.key_path("headers"), problems, "header"),
        "cookies": read_matches(s.raw("cookies"), s.key_path("cookies"), problems, "cookie"),
    }


TRAFFIC_KEYS = (
    "timeouts",
    "request_headers",
    "response_headers",
    "redirect",
    "methods",
    "headers",
    "cookies",
)
