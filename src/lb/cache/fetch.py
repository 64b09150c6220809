"""`Tee`: the `send` the cache gives the proxy when it goes upstream.

It passes the response on to the client while keeping a copy of the body (up to
`max_entry_bytes`; beyond that it stops copying and the response streams through unstored), and
stores the entry before the last body message goes out, so the entry exists before the client can
send its next request. When revalidating a stored response it also recognises the answers the
client must not see: a 304 that refreshes the entry, and an error the stale entry may stand in
for (stale-if-error).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lb.cache.conditional import not_modified, not_modified_headers
from lb.cache.directives import format_http_date, weak_match
from lb.cache.entry import Entry
from lb.cache.rules import (
    ERROR_STATUSES,
    ResponseInfo,
    freshness_lifetime,
    initial_age,
    stale_on_error,
    storable,
    stored_headers,
    updated_headers,
)
from lb.cache.vary import secondary_key
from lb.types import Send

if TYPE_CHECKING:
    from lb.cache.cache import Cache
    from lb.cache.request import CacheRequest


def with_x_cache(headers: list[tuple[bytes, bytes]], result: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with X-Cache set to `result`: a backend's own X-Cache is replaced, not kept."""
    out = [(n, v) for n, v in headers if n != b"x-cache"]
    out.append((b"x-cache", result))
    return out


def tag_miss(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return with_x_cache(headers, b"MISS")


class Outcome(enum.Enum):
    FORWARDED = "forwarded"  # the upstream response went to the client (MISS)
    REFRESHED = "refreshed"  # a 304 refreshed the stale entry: `Tee.entry` answers (HIT)
    USE_STALE = "use_stale"  # an error the stale entry stands in for (STALE)
    MISMATCH = "mismatch"  # a 304 for another representation: fetch again unconditionally


_FORWARD, _NOT_MODIFIED, _CAPTURE, _SWALLOW = range(4)


class Tee:
    __slots__ = (
        "cache",
        "request",
        "send",
        "stale",
        "request_time",
        "release",
        "outcome",
        "entry",
        "storable",
        "stored",
        "freshened",
        "outdated",
        "_held",
        "finished",
        "_mode",
        "_status",
        "_headers",
        "_info",
        "_lifetime",
        "_response_time",
        "_buffer",
        "_buffered",
    )

    def __init__(
        self,
        cache: Cache,
        request: CacheRequest,
        send: Send | None,
        *,
        stale: Entry | None,
        request_time: float,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.cache = cache
        self.request = request
        self.send = send  # None: a background refresh, nothing goes to a client
        self.stale = stale
        self.request_time = request_time
        self.release = release  # wakes the requests waiting for this one, once stored
        self.outcome: Outcome | None = None
        self.entry: Entry | None = None
        self.storable = False  # the response head allowed storing
        self.stored = False
        # A HEAD's 200 about the stored GET response `stale` (RFC 9111 §4.3.5): that response
        # updated with its fields, or, when its validators differ, `outdated`.
        self.freshened: Entry | None = None
        self.outdated = False
        self._held: list[tuple[bytes, bytes]] = []  # the 304's head, sent by `finish`
        self.finished = False  # the last body message went out
        self._mode = _FORWARD
        self._buffer: list[bytes] | None = None
        self._buffered = 0

    async def __call__(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            await self._body(message)
        elif kind == "http.response.start":
            await self._start(message)
        elif self._mode == _FORWARD and self.send is not None:
            await self.send(message)

    async def _start(self, message: Any) -> None:
        cache = self.cache
        status: int = message["status"]
        headers: list[tuple[bytes, bytes]] = message["headers"]
        now = self._response_time = cache.clock()
        stale = self.stale
        if stale is not None:
            if status == 304:
                self._mode = _SWALLOW
                self._refresh(stale, headers, now)
                return
            if status in ERROR_STATUSES and stale_on_error(
                stale.policy, stale.age(now), self.request.directives
            ):
                self._mode = _SWALLOW
                self.outcome = Outcome.USE_STALE
                return
            if status == 200 and self.request.method == "HEAD" and stale.primary[:4] == b"GET ":
                self._freshen(stale, headers, now)
        self.outcome = Outcome.FORWARDED
        request = self.request
        # A no-store request stores nothing, and its own conditions went upstream with it: its
        # response goes on as it is, only tagged, without its caching fields being read.
        if request.may_store:
            config = cache.config
            info = self._info = ResponseInfo(headers, config.targeted_fields)
            lifetime = freshness_lifetime(
                info, status, now, config.default_ttl, heuristic=config.heuristic
            )
            if storable(
                status,
                info,
                request.directives,
                authorization=request.authorization,
                lifetime=lifetime,
                store_set_cookie=config.store_set_cookie,
            ):
                length = _content_length(headers)
                if length is None or length <= cache.config.max_entry_bytes:
                    self.storable = True
                    self._buffer = []
                    self._status = status
                    self._headers = stored_headers(headers, info.cc)
                    self._lifetime = lifetime or 0.0
        # A response without a body is complete for the client with its head, so whatever it
        # changes in the store is done before the head goes out (the next request may follow
        # at once).
        bodiless = request.method == "HEAD" or status == 204 or _content_length(headers) == 0
        if self._buffer is not None and bodiless:
            self._buffer = None
            await self._store(b"")
        if self.freshened is not None:
            await cache.put(self.freshened)
        elif self.outdated and stale is not None:
            await cache.invalidate([stale.primary])
        send = self.send
        if send is None:
            self._mode = _CAPTURE
            return
        out = tag_miss(headers)
        # The client's own conditional was taken off the upstream request so the response could
        # be stored; it is answered here, against the response just received (RFC 9111 §4.3.2).
        # The 304 waits for the body to be stored, since it ends the client's exchange.
        if self._buffer is not None and status == 200:
            info = self._info
            if not_modified(request.conditions, info.etag, info.last_modified, info.date or now):
                self._mode = _NOT_MODIFIED
                out = not_modified_headers(out)
                out += [(n, v) for n, v in headers if n == b"x-request-id"]
                out.append((b"x-cache", b"MISS"))
                self._held = out
                return
        await send({"type": "http.response.start", "status": status, "headers": out})

    def _refresh(self, stale: Entry, headers: list[tuple[bytes, bytes]], now: float) -> None:
        """A 304 answered our conditional request: freshen the stored entry (RFC 9111 §4.3.4).
        Its Content-Length, if any, describes the stored body, never replaces it (§3.2)."""
        info = ResponseInfo(headers, self.cache.config.targeted_fields)
        if (
            info.etag is not None
            and stale.etag is not None
            and not weak_match(info.etag, stale.etag)
        ):
            self.outcome = Outcome.MISMATCH
            return
        self.entry = self._updated(stale, headers, info, now)
        self.outcome = Outcome.REFRESHED

    def _freshen(self, stale: Entry, headers: list[tuple[bytes, bytes]], now: float) -> None:
        """A 200 to a HEAD while a GET response is stored (RFC 9111 §4.3.5): when the validators
        and Content-Length it carries match the stored ones, it updates the stored response;
        otherwise the stored one is outdated."""
        info = ResponseInfo(headers, self.cache.config.targeted_fields)
        last_modified = next((v for n, v in headers if n == b"last-modified"), None)
        length = _content_length(headers)
        if (
            (info.etag is not None and info.etag != stale.etag)
            or (last_modified is not None and last_modified != stale.last_modified_raw)
            or (length is not None and length != len(stale.body))
        ):
            self.outdated = True
            return
        self.freshened = self._updated(stale, headers, info, now)

    def _updated(
        self, stale: Entry, headers: list[tuple[bytes, bytes]], info: ResponseInfo, now: float
    ) -> Entry:
        """`stale` with the fields of a response that validated it (RFC 9111 §3.2)."""
        merged = updated_headers(stale.headers, headers)
        if info.date is None:  # as when storing: the time of receipt stands in (RFC 9110 §6.6.1)
            merged = [(n, v) for n, v in merged if n != b"date"]
            merged.append((b"date", format_http_date(now)))
        config = self.cache.config
        merged_info = ResponseInfo(merged, config.targeted_fields)
        merged = stored_headers(merged, merged_info.cc)
        lifetime = freshness_lifetime(
            merged_info, stale.status, now, config.default_ttl, heuristic=config.heuristic
        )
        return Entry(
            stale.primary,
            stale.status,
            merged,
            stale.body,
            response_time=now,
            initial_age=initial_age(info, self.request_time, now),
            lifetime=lifetime or 0.0,
            vary=stale.vary,
            secondary=stale.secondary,
            info=merged_info,
        )

    async def _body(self, message: Any) -> None:
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        buffer = self._buffer
        if buffer is not None:
            if body:
                self._buffered += len(body)
                if self._buffered > self.cache.config.max_entry_bytes:
                    self._buffer = buffer = None  # too big: stream the rest through unstored
                else:
                    buffer.append(body)
            if not more and buffer is not None:
                await self._store(b"".join(buffer))
        mode = self._mode
        if mode == _FORWARD:
            if not more:
                self.finished = True
            assert self.send is not None  # a refresh without a client is always _CAPTURE
            await self.send(message)
        elif mode == _NOT_MODIFIED and not more:
            await self.finish()

    async def _store(self, body: bytes) -> None:
        cache = self.cache
        request = self.request
        info = self._info
        headers = self._headers
        if request.method == "GET" and not any(n == b"content-length" for n, _ in headers):
            # Streamed (chunked) upstream; a replay sends the body in one piece with its length.
            if self._status not in (204, 304):
                headers.append((b"content-length", str(len(body)).encode("ascii")))
        if info.date is None:
            # RFC 9110 §6.6.1: a recipient with a clock that caches a response without Date adds
            # the time it was received.
            headers.append((b"date", format_http_date(self._response_time)))
        entry = Entry(
            request.primary,
            self._status,
            headers,
            body,
            response_time=self._response_time,
            initial_age=initial_age(info, self.request_time, self._response_time),
            lifetime=self._lifetime,
            vary=info.vary,
            secondary=secondary_key(info.vary, request.headers),
            info=info,
        )
        self.entry = entry
        self.stored = await cache.put(entry)
        if self.release is not None:
            self.release()

    @property
    def answered_304(self) -> bool:
        """The client got a 304 for the full response that came from upstream."""
        return self._mode == _NOT_MODIFIED

    async def finish(self) -> None:
        """Send the 304 that answers the client's own conditional: once the full response is
        stored, or when its upstream body broke off (nothing to abort: the 304 has none)."""
        if self._mode == _NOT_MODIFIED and not self.finished:
            self.finished = True
            assert self.send is not None  # a refresh without a client is always _CAPTURE
            await self.send({"type": "http.response.start", "status": 304, "headers": self._held})
            await self.send({"type": "http.response.body", "body": b""})


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def idle_receive() -> Any:
    """A `receive` for a request lb makes itself: an empty body, then never a disconnect."""
    sent = False

    async def receive() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.get_running_loop().create_future()  # cancelled when the request ends

    return receive
