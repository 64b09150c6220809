"""Choosing a content coding from a request's Accept-Encoding (RFC 9110 §12.5.3), sans I/O.

The answer is one of the codings lb offers, or None for identity (the response as the backend
sent it). Weights decide; among equal weights the configured order does, and a coding beats
identity at the same weight (that is what the client asked for by listing it).
"""

from __future__ import annotations

from collections.abc import Sequence

# A bounded memo of header values: clients send a handful of distinct ones (one per browser
# family), a hostile client could send endless variants, so the memo forgets when full.
_MEMO_SIZE = 256


def weights(value: bytes) -> dict[str, float]:
    """The codings an Accept-Encoding value names, lower-case, with their weights; a malformed
    weight counts as 0 (RFC 9110 §12.4.2 allows at most three decimals in 0..1)."""
    found: dict[str, float] = {}
    for element in value.split(b","):
        name, _, params = element.partition(b";")
        coding = name.strip(b" \t").lower().decode("latin-1")
        if not coding:
            continue
        weight = 1.0
        for param in params.split(b";"):
            key, eq, raw = param.partition(b"=")
            if eq and key.strip(b" \t").lower() == b"q":
                weight = _qvalue(raw.strip(b" \t"))
        if coding == "x-gzip":  # RFC 9110 §8.4.1.3: the same coding
            coding = "gzip"
        found[coding] = max(weight, found.get(coding, -1.0))  # listed twice: the kinder one
    return found


def _qvalue(raw: bytes) -> float:
    try:
        weight = float(raw)
    except ValueError:
        return 0.0
    return weight if 0.0 <= weight <= 1.0 else 0.0


def choose(values: Sequence[bytes], offered: Sequence[str]) -> str | None:
    """The coding in `offered` (preferred first) that the request's Accept-Encoding field lines
    accept best, or None: identity. No field at all: identity, as every server does in practice
    (RFC 9110 would allow any coding, but clients that decode nothing send no field)."""
    if not values:
        return None
    accepted = weights(b",".join(values))
    star = accepted.get("*")
    best: str | None = None
    best_weight = 0.0
    for coding in offered:
        weight = accepted.get(coding, star if star is not None else 0.0)
        if weight > best_weight:
            best, best_weight = coding, weight
    if best is None:
        return None
    # Identity weighs in only when the field gives it a weight: a client that lists codings
    # without one wants them, though identity stays acceptable to it (RFC 9110 §12.5.3).
    identity = accepted.get("identity", star if star is not None else 0.0)
    return best if best_weight >= identity else None


class Negotiator:
    """`choose` for one route's offered codings, memoised by header value."""

    __slots__ = ("offered", "_memo")

    def __init__(self, offered: Sequence[str]) -> None:
        self.offered = tuple(offered)
        self._memo: dict[bytes, str | None] = {}

    def __repr__(self) -> str:
        return f"<Negotiator {', '.join(self.offered)}>"

    def __call__(self, value: bytes | None) -> str | None:
        if value is None:
            return None
        memo = self._memo
        try:
            return memo[value]
        except KeyError:
            pass
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        chosen = memo[value] = choose((value,), self.offered)
        return chosen
