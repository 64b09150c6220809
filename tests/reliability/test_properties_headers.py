"""Properties of header handling (lb.headers) and Cache-Control parsing (lb.cache.directives),
for any input a client or a backend can send, checked against independent oracles."""

from __future__ import annotations

import ipaddress
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from lb.cache.directives import (
    MAX_DELTA,
    delta_seconds,
    format_http_date,
    http_date,
    parse_cache_control,
    parse_etags,
)
from lb.proxy.headers import (
    HOP_BY_HOP,
    client_ip,
    downstream_response_headers,
    is_trusted,
    new_request_id,
    upstream_request_headers,
    valid_request_id,
)

EXAMPLES = settings(max_examples=300, deadline=None)

TOKEN_CHARS = string.ascii_lowercase + string.digits + "!#$%&'*+-.^_`|~"
# Names a client or backend may send: the hop-by-hop ones, the ones lb rewrites, and others.
SPECIAL = sorted(
    HOP_BY_HOP
    | {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto"}
    | {b"x-forwarded-host", b"x-request-id", b"x-a", b"x-b", b"cookie"}
)
names = st.one_of(
    st.sampled_from(SPECIAL), st.text(TOKEN_CHARS, min_size=1, max_size=12).map(str.encode)
)
# Field values as llhttp delivers them: no CR, LF or NUL; obs-text allowed.
values = st.binary(max_size=40).map(lambda v: bytes(b for b in v if b not in (0, 10, 13)))
connection_values = st.lists(st.one_of(names, st.just(b" X-A ")), max_size=4).map(b", ".join)


def one_host(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The server refuses a second Host (400) before these functions see the request."""
    first = next((i for i, (n, _) in enumerate(headers) if n == b"host"), None)
    return [h for i, h in enumerate(headers) if h[0] != b"host" or i == first]


header_lists = st.lists(
    st.one_of(st.tuples(names, values), st.tuples(st.just(b"connection"), connection_values)),
    max_size=12,
).map(one_host)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
networks = st.lists(
    st.one_of(
        st.builds(
            lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
            st.ip_addresses(v=4),
            st.integers(8, 32),
        ),  # noqa: E501
        st.builds(
            lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
            st.ip_addresses(v=6),
            st.integers(16, 128),
        ),  # noqa: E501
    ),
    max_size=3,
).map(tuple)


# What lb writes itself: no client header, Connection included, can take these away.
OWNED = (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id")


def listed_by_connection(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Oracle: every name any Connection header lists (RFC 9110 7.6.1)."""
    out: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            out |= {t.strip().lower() for t in value.split(b",") if t.strip()}
    return out


# -- to the backend ------------------------------------------------------------------------------


@EXAMPLES
@given(
    headers=header_lists,
    peer=addresses,
    trusted=st.booleans(),
    preserve=st.booleans(),
    request_id=st.just(None) | st.binary(max_size=140),
)
def test_upstream_headers(
    headers: list[tuple[bytes, bytes]],
    peer: str,
    trusted: bool,
    preserve: bool,
    request_id: bytes | None,
) -> None:
    rid = request_id if request_id is not None and valid_request_id(request_id) else None
    rid = rid or new_request_id()
    out = upstream_request_headers(
        headers,
        peer=peer,
        scheme="http",
        request_id=rid,
        host=None if preserve else b"backend:80",
        fallback_host=b"backend:80",
        peer_trusted=trusted,
    )
    out_names = [name for name, _ in out]
    # Connection removes what it lists, except what the backend needs to read the request.
    dropped = listed_by_connection(headers) - {b"host", b"content-length"}
    # Nothing hop-by-hop leaves, save the chunked framing lb declares itself.
    for name, value in out:
        assert name not in HOP_BY_HOP or (name, value) == (b"transfer-encoding", b"chunked")
        framing = (name, value) == (b"transfer-encoding", b"chunked")
        assert name not in dropped or name in OWNED or framing, (name, dropped)
        assert not set(value) & {0, 10, 13}, (name, value)
    # One of each header lb owns; the request ID valid and the same one the client will see.
    for owned in (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-request-id"):
        assert out_names.count(owned) == 1, owned
    assert out_names.count(b"x-forwarded-host") <= 1
    assert dict(out)[b"x-request-id"] == rid and valid_request_id(rid)
    assert dict(out)[b"x-forwarded-for"].endswith(peer.encode())
    if not trusted:
        assert dict(out)[b"x-forwarded-proto"] == b"http"
    if not preserve:
        assert dict(out)[b"host"] == b"backend:80"
    # Every end-to-end header the client sent goes on, in order, byte for byte.
    rewritten = {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
    kept = [
        (n, v)
        for n, v in headers
        if n not in HOP_BY_HOP and n not in dropped and n not in rewritten | {b"x-request-id"}
    ]
    assert [
        (n, v) for n, v in out if n not in rewritten | {b"x-request-id", b"transfer-encoding"}
    ] == kept  # noqa: E501


@EXAMPLES
@given(headers=header_lists)
def test_downstream_headers(headers: list[tuple[bytes, bytes]]) -> None:
    mixed_case = [(n.upper() if i % 2 else n, v) for i, (n, v) in enumerate(headers)]
    out = downstream_response_headers(mixed_case, b"rid-1")
    dropped = listed_by_connection(headers)
    assert [n for n, _ in out].count(b"x-request-id") == 1
    assert out[-1] == (b"x-request-id", b"rid-1")
    for name, _ in out[:-1]:
        assert name not in HOP_BY_HOP and name not in dropped and name != b"x-request-id"
    kept = [(n, v) for n, v in headers if n not in HOP_BY_HOP | dropped and n != b"x-request-id"]
    assert out[:-1] == kept


# -- request IDs and client addresses ------------------------------------------------------------

ID_CHARS = frozenset((string.ascii_letters + string.digits + "._:-").encode())


@EXAMPLES
@given(st.one_of(st.binary(max_size=140), st.text(max_size=140).map(str.encode)))
def test_request_id_validity_matches_the_spec_grammar(value: bytes) -> None:
    expected = 1 <= len(value) <= 128 and all(b in ID_CHARS for b in value)
    assert valid_request_id(value) is expected


def test_generated_request_ids_are_valid_and_distinct() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(valid_request_id(i) for i in ids)


xff_hops = st.one_of(addresses, st.text(max_size=10), st.just(""), st.just(" 10.0.0.1 "))


@EXAMPLES
@given(
    peer=addresses,
    hops=st.lists(xff_hops, max_size=5),
    trusted=networks,
)
def test_client_ip_is_the_peer_or_an_untrusted_hop(
    peer: str, hops: list[str], trusted: tuple[ipaddress.IPv4Network, ...]
) -> None:
    xff = ",".join(hops).encode("utf-8") if hops else None
    result = client_ip(peer, xff, trusted)
    if not is_trusted(peer, trusted):
        assert result == peer  # an untrusted peer's headers change nothing
        return
    if result == peer:
        return
    ip = ipaddress.ip_address(result)  # always a valid address
    assert not is_trusted(result, trusted)
    assert ip in {ipaddress.ip_address(h.strip()) for h in hops if _is_ip(h.strip())}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- Cache-Control and friends -------------------------------------------------------------------

directive_names = st.text(string.ascii_lowercase + "-", min_size=1, max_size=10)
token_args = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8)
quoted_args = st.text(string.ascii_letters + ' ,=;\\"', max_size=10)


def render(name: str, arg: str | None, quoted: bool, upper: bool) -> str:
    name = name.upper() if upper else name
    if arg is None:
        return name
    if quoted:
        return name + '="' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name}={arg}"


@EXAMPLES
@given(
    st.dictionaries(
        directive_names,
        st.one_of(
            st.none(), st.tuples(token_args, st.just(False)), st.tuples(quoted_args, st.just(True))
        ),  # noqa: E501
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_cache_control_round_trips_however_it_is_written(
    directives: dict[str, tuple[str, bool] | None], rng: object
) -> None:
    import random

    assert isinstance(rng, random.Random)
    items = [
        render(name, None if a is None else a[0], a is not None and a[1], rng.random() < 0.3)
        for name, a in directives.items()
    ]
    rng.shuffle(items)
    # Spread over several field lines with odd spacing: all one list (RFC 9110 5.3).
    lines: list[bytes] = []
    for item in items:
        spaced = " " * rng.randint(0, 2) + item + "\t" * rng.randint(0, 1)
        if lines and rng.random() < 0.5:
            lines[-1] += b"," + spaced.encode()
        else:
            lines.append(spaced.encode())
    parsed = parse_cache_control(lines)
    assert parsed == {n: None if a is None else a[0] for n, a in directives.items()}


@EXAMPLES
@given(st.lists(st.binary(max_size=60), max_size=4))
def test_cache_control_parsing_never_raises(lines: list[bytes]) -> None:
    parsed = parse_cache_control(lines)
    for name in parsed:
        assert name and name == name.strip().lower()
    parse_etags(lines)
    http_date(b"".join(lines))


@EXAMPLES
@given(st.one_of(st.text(max_size=14), st.integers(0, 10**12).map(str)))
def test_delta_seconds(value: str) -> None:
    result = delta_seconds(value)
    if value.isascii() and value.isdigit():
        assert result == min(int(value), MAX_DELTA)
    else:
        assert result is None


@EXAMPLES
@given(st.integers(0, 253402300799))  # up to 9999-12-31
def test_http_dates_round_trip(seconds: int) -> None:
    assert http_date(format_http_date(seconds)) == seconds


etags = st.builds(
    lambda weak, tag: (b"W/" if weak else b"") + b'"' + tag + b'"',
    st.booleans(),
    st.text(string.ascii_letters + string.digits + ",;= ", max_size=8).map(str.encode),
)


@EXAMPLES
@given(st.lists(etags, min_size=1, max_size=5))
def test_etag_lists_round_trip(tags: list[bytes]) -> None:
    assert parse_etags([b" , ".join(tags)]) == tuple(tags)
