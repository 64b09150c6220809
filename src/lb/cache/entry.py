"""A stored response (`Entry`) and its compact binary form for shared stores.

An entry keeps the response as it will be replayed (status, stored header fields, body) and the
numbers RFC 9111 needs later: response time, corrected initial age (§4.2.3) and freshness
lifetime (§4.2.1). Everything else (validators, directives) is parsed back from its headers.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from lb.cache.rules import Policy, ResponseInfo, current_age
from lb.cache.vary import secondary_key

# How long past its freshness an entry with validators is kept for revalidation (or for a
# client's max-stale): a 304 is much cheaper than a full response.
KEEP_FOR_REVALIDATION = 3600.0
# How long past its freshness any other entry is kept: a client's max-stale or stale-if-error may
# still accept it (RFC 9111 §5.2.1.2, RFC 5861 §4), and an unconditional HEAD may freshen it.
KEEP_STALE = 600.0
_FIXED = struct.Struct("!BBHddddIHI")  # version, flags, status, times, lengths
_PAIR = struct.Struct("!HI")
_VERSION = 2  # 2: the targeted field whose directives apply travels with the entry
_ZLIB = 1
_COMPRESS_MIN = 1024  # smaller bodies are stored as they are


class Entry:
    __slots__ = (
        "primary",
        "status",
        "headers",
        "body",
        "response_time",
        "initial_age",
        "lifetime",
        "vary",
        "secondary",
        "etag",
        "last_modified",
        "last_modified_raw",
        "date",
        "cc_field",
        "policy",
        "stored_until",
        "size",
    )

    def __init__(
        self,
        primary: bytes,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        response_time: float,
        initial_age: float,
        lifetime: float,
        vary: tuple[str, ...],
        secondary: bytes,
        info: ResponseInfo | None = None,
        cc_field: str = "",
    ) -> None:
        self.primary = primary
        self.status = status
        self.headers = headers
        self.body = body
        self.response_time = response_time
        self.initial_age = initial_age
        self.lifetime = lifetime
        self.vary = vary
        self.secondary = secondary
        if info is None:
            info = ResponseInfo(headers, (cc_field,) if cc_field else ())
        self.cc_field = info.cc_field
        self.etag = info.etag
        self.last_modified = info.last_modified
        self.last_modified_raw = next((v for n, v in headers if n == b"last-modified"), None)
        self.date = info.date if info.date is not None else response_time
        self.policy = Policy(info.cc, lifetime)
        policy = self.policy
        keep = max(
            policy.swr,
            float(policy.sie or 0),
            KEEP_FOR_REVALIDATION if self.etag or self.last_modified_raw else KEEP_STALE,
        )
        # Wall-clock time after which the entry is of no use to anyone (the store's TTL).
        self.stored_until = response_time - initial_age + lifetime + keep
        self.size = (
            len(body)
            + len(primary)
            + len(secondary)
            + sum(len(n) + len(v) + 16 for n, v in headers)
        ) + 256

    def __repr__(self) -> str:
        return f"<Entry {self.primary!r} {self.status} lifetime={self.lifetime:g}s>"

    def age(self, now: float) -> float:
        return current_age(self.initial_age, self.response_time, now)

    def ttl(self, now: float) -> float:
        return self.stored_until - now

    def encode(self) -> bytes:
        body = self.body
        flags = 0
        if len(body) >= _COMPRESS_MIN and not any(
            n == b"content-encoding" for n, _ in self.headers
        ):
            packed = zlib.compress(body, 1)
            if len(packed) < len(body) * 0.9:
                body = packed
                flags |= _ZLIB
        # The directives' field is kept with Vary ("vary;field"): a store shared by instances
        # with other `targeted_fields` still reads an entry as it was stored.
        vary = (",".join(self.vary) + ";" + self.cc_field).encode("latin-1")
        parts = [
            _FIXED.pack(
                _VERSION,
                flags,
                self.status,
                self.response_time,
                self.initial_age,
                self.lifetime,
                self.stored_until,
                len(self.primary),
                len(vary),
                len(self.secondary),
            ),
            self.primary,
            vary,
            self.secondary,
            struct.pack("!H", len(self.headers)),
        ]
        for name, value in self.headers:
            parts.append(_PAIR.pack(len(name), len(value)))
            parts.append(name)
            parts.append(value)
        parts.append(body)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """The entry `encode` produced, or None for anything else (another version, damage)."""
        try:
            (version, flags, status, response_time, initial_age, lifetime, _, n_primary, n_vary,
             n_secondary) = _FIXED.unpack_from(data)  # fmt: skip
            if version != _VERSION:
                return None
            at = _FIXED.size
            primary = data[at : at + n_primary]
            at += n_primary
            vary_text, _, cc_field = data[at : at + n_vary].decode("latin-1").partition(";")
            at += n_vary
            secondary = data[at : at + n_secondary]
            at += n_secondary
            (count,) = struct.unpack_from("!H", data, at)
            at += 2
            headers = []
            for _ in range(count):
                n_name, n_value = _PAIR.unpack_from(data, at)
                at += _PAIR.size
                name = data[at : at + n_name]
                at += n_name
                headers.append((name, data[at : at + n_value]))
                at += n_value
            body = data[at:]
            if flags & _ZLIB:
                body = zlib.decompress(body)
        except (struct.error, zlib.error, UnicodeDecodeError):
            return None
        return cls(
            primary,
            status,
            headers,
            body,
            response_time=response_time,
            initial_age=initial_age,
            lifetime=lifetime,
            vary=tuple(vary_text.split(",")) if vary_text else (),
            secondary=secondary,
            cc_field=cc_field,
        )


def select(entries: Sequence[Entry], headers: Sequence[tuple[bytes, bytes]]) -> Entry | None:
    """The stored response that may answer a request with these headers (RFC 9111 §4.1): its
    Vary-nominated fields match; among several, the most recent by Date."""
    best: Entry | None = None
    keys: dict[tuple[str, ...], bytes] = {}
    for entry in entries:
        key = keys.get(entry.vary)
        if key is None:
            key = keys[entry.vary] = secondary_key(entry.vary, headers)
        if key == entry.secondary and (
            best is None or (entry.date, entry.response_time) > (best.date, best.response_time)
        ):
            best = entry
    return best
