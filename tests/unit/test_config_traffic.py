"""A route's traffic control (SPEC 12) in the config: what loads, and every mistake reported at
its key path."""

from __future__ import annotations

from typing import Any

import pytest

from lb.config import ConfigError, load_config
from lb.config.model import RouteTimeoutConfig, Template, ValueMatch


def config(*routes: dict[str, Any]) -> dict[str, Any]:
    return {
        "pools": {
            "web": {"backends": ["http://127.0.0.1:9001"]},
            "canary": {"backends": ["http://127.0.0.1:9002"]},
        },
        "routes": list(routes),
    }


def problems_of(source: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return info.value.problems


BAD: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "unknown placeholder",
        {"pool": "web", "request_headers": {"set": {"X-Foo": "{nope}"}}},
        [
            "routes[0].request_headers.set.X-Foo: unknown placeholder {nope}; known: "
            "{client_ip}, {request_id}, {host}, {scheme}"
        ],
    ),
    (
        "placeholder close to a known one",
        {"pool": "web", "response_headers": {"add": {"X-Ip": "{client-ip}"}}},
        [
            "routes[0].response_headers.add.X-Ip: unknown placeholder {client-ip} (did you mean "
            "'client_ip'?); known: {client_ip}, {request_id}, {host}, {scheme}"
        ],
    ),
    (
        "unmatched brace",
        {"pool": "web", "request_headers": {"set": {"X-Foo": "a}b"}}},
        ["routes[0].request_headers.set.X-Foo: unmatched '}' in 'a}b' (write }})"],
    ),
    (
        "hop-by-hop name",
        {"pool": "web", "request_headers": {"set": {"Connection": "close"}}},
        [
            "routes[0].request_headers.set.Connection: Connection is hop-by-hop: lb never "
            "forwards it"
        ],
    ),
    (
        "hop-by-hop in remove",
        {"pool": "web", "response_headers": {"remove": ["Server", "Transfer-Encoding"]}},
        [
            "routes[0].response_headers.remove[1]: Transfer-Encoding is hop-by-hop: lb never "
            "forwards it"
        ],
    ),
    (
        "invalid name",
        {"pool": "web", "response_headers": {"set": {"X Foo": "1"}}},
        ["routes[0].response_headers.set.'X Foo': invalid header name 'X Foo'"],
    ),
    (
        "value with a line break",
        {"pool": "web", "response_headers": {"set": {"X-Foo": "a\r\nSet-Cookie: x=1"}}},
        [
            "routes[0].response_headers.set.X-Foo: invalid header value 'a\\r\\nSet-Cookie: x=1':"
            " visible ASCII only, spaces inside, no line breaks"
        ],
    ),
    (
        "request id is lb's",
        {"pool": "web", "request_headers": {"remove": ["X-Request-ID"]}},
        [
            "routes[0].request_headers.remove[0]: X-Request-ID cannot be changed: lb's request id "
            "(SPEC 3)"
        ],
    ),
    (
        "host may only be set",
        {"pool": "web", "request_headers": {"add": {"Host": "x"}}},
        ["routes[0].request_headers.add.Host: Host may only be set (a request has exactly one)"],
    ),
    (
        "header rules of the wrong shape",
        {"pool": "web", "request_headers": {"set": ["X-Foo"], "sett": {}}},
        [
            "routes[0].request_headers.sett: unknown key (did you mean 'set'?)",
            "routes[0].request_headers.set: expected a mapping of header names to values, got list",
        ],
    ),
    (
        "bad regex",
        {"pool": "canary", "headers": {"X-Canary": "~(("}},
        [
            "routes[0].headers.X-Canary: invalid regular expression '((': missing ), unterminated "
            "subpattern at position 1"
        ],
    ),
    (
        "bad cookie regex",
        {"pool": "canary", "cookies": {"beta": "~[a"}},
        [
            "routes[0].cookies.beta: invalid regular expression '[a': unterminated character set "
            "at position 0"
        ],
    ),
    (
        "lower-case method",
        {"pool": "web", "methods": ["GET", "post"]},
        ["routes[0].methods[1]: methods are upper-case, got 'post' (did you mean 'POST'?)"],
    ),
    (
        "methods not a list",
        {"pool": "web", "methods": "GET"},
        ["routes[0].methods: expected a list of methods, e.g. [GET, HEAD], got 'GET'"],
    ),
    (
        "redirect status",
        {"redirect": {"to": "https://{host}{path}", "status": 303}},
        ["routes[0].redirect.status: expected one of 301, 302, 307, 308, got 303"],
    ),
    (
        "redirect placeholder",
        {"redirect": {"to": "https://{host}/{client_ip}"}},
        ["routes[0].redirect.to: unknown placeholder {client_ip}; known: {host}, {path}, {scheme}"],
    ),
    (
        "redirect to a relative URL",
        {"redirect": {"to": "example.com{path}"}},
        [
            "routes[0].redirect.to: expected an http(s):// URL or a path starting with '/', got "
            "'example.com{path}'"
        ],
    ),
    (
        "redirect without to",
        {"redirect": {"status": 308}},
        ["routes[0].redirect.to: required"],
    ),
    (
        "redirect with a pool",
        {"pool": "web", "redirect": {"to": "https://{host}{path}"}, "timeouts": {"read": 1}},
        [
            "routes[0].pool: a redirect route answers without a backend: remove this key",
            "routes[0].timeouts: a redirect route answers without a backend: remove this key",
        ],
    ),
    (
        "redirect with a mirror",
        {"redirect": {"to": "/x"}, "mirror": {"pool": "canary"}},
        ["routes[0].mirror: a redirect route answers without a backend: remove this key"],
    ),
    ("no pool and no redirect", {"path_prefix": "/x"}, ["routes[0].pool: required"]),
    (
        "timeouts",
        {"pool": "web", "timeouts": {"read": 0, "conect": "1s"}},
        [
            "routes[0].timeouts.conect: unknown key (did you mean 'connect'?)",
            "routes[0].timeouts.read: must be greater than 0",
        ],
    ),
]


@pytest.mark.parametrize(
    ("route", "expected"), [(r, e) for _, r, e in BAD], ids=[n for n, _, _ in BAD]
)
def test_mistakes_are_reported_at_their_key_path(
    route: dict[str, Any], expected: list[str]
) -> None:
    assert sorted(problems_of(config(route))) == sorted(expected)


def test_problems_name_the_route_by_index() -> None:
    problems = problems_of(
        config(
            {"pool": "web"},
            {"pool": "web", "path_prefix": "/a"},
            {"pool": "web", "path_prefix": "/b", "request_headers": {"set": {"X-Foo": "{x}"}}},
        )
    )
    assert [p.split(":")[0] for p in problems] == ["routes[2].request_headers.set.X-Foo"]


def test_a_valid_route_loads_with_templates_split_and_regexes_compiled() -> None:
    loaded = load_config(
        config(
            {
                "pool": "canary",
                "methods": ["GET", "PUT"],
                "headers": {"X-Canary": "1", "User-Agent": "~beta/[0-9]+"},
                "cookies": {"tier": "gold"},
                "timeouts": {"read": "250ms"},
                "request_headers": {
                    "set": {"X-Client": "{client_ip}", "Host": "api.internal"},
                    "add": {"X-Trace": "id={request_id}; {{literal}}", "X-Version": 2},
                    "remove": ["Cookie", "cookie"],
                },
                "response_headers": {"set": {"X-Frame-Options": "DENY"}},
            },
            {"host": "old.example", "redirect": {"to": "https://{host}{path}", "status": 308}},
            {"pool": "web"},
        )
    )
    canary, redirect, plain = loaded.routes
    assert canary.conditional and not plain.conditional
    assert canary.methods == frozenset({"GET", "PUT"})
    assert canary.headers[0] == ("x-canary", ValueMatch(exact="1"))
    name, match = canary.headers[1]
    assert name == "user-agent" and match.pattern is not None
    assert match.pattern.search("Mozilla beta/12") is not None
    assert canary.cookies == (("tier", ValueMatch(exact="gold")),)
    assert canary.timeouts == RouteTimeoutConfig(read=0.25)
    rules = canary.request_headers
    assert rules is not None
    assert rules.set == (
        ("x-client", Template("{client_ip}", ("", "client_ip", ""))),
        ("host", Template("api.internal", ("api.internal",))),
    )
    assert rules.add[0] == (
        "x-trace",
        Template("id={request_id}; {{literal}}", ("id=", "request_id", "; {literal}")),
    )
    assert rules.add[1] == ("x-version", Template("2", ("2",)))
    assert rules.remove == ("cookie",)
    assert redirect.pool is None and redirect.redirect is not None
    assert redirect.redirect.status == 308
    assert redirect.redirect.to.parts == ("https://", "host", "", "path", "")


def test_redirect_defaults_to_301() -> None:
    loaded = load_config(config({"redirect": {"to": "https://example.com{path}"}}))
    assert loaded.routes[0].redirect is not None
    assert loaded.routes[0].redirect.status == 301


def test_a_canary_route_does_not_make_the_plain_route_after_it_unreachable() -> None:
    load_config(
        config(
            {"pool": "canary", "path_prefix": "/api", "cookies": {"canary": "1"}},
            {"pool": "web", "path_prefix": "/api"},
        )
    )
    problems = problems_of(
        config(
            {"pool": "web", "path_prefix": "/api"},
            {"pool": "canary", "path_prefix": "/api", "headers": {"X-Canary": "1"}},
        )
    )
    assert problems == ["routes[1]: unreachable: routes[0] has the same host and path_prefix"]


def test_config_error_lists_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            config(
                {"pool": "web", "headers": {"X-A": "~("}, "methods": ["get"]},
                {"redirect": {"to": "{nope}"}},
            )
        )
    assert len(info.value.problems) == 3
