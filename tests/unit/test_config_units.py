"""parse_duration and parse_size: tables of good and bad input, plus round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.config import parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (5, 5.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("30", 30.0),
        (" 2s ", 2.0),
        ("10 ms", 0.01),
        (".5s", 0.5),
        ("0ms", 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 minutes", "invalid duration '5 minutes'"),
        ("abc", "invalid duration 'abc'"),
        ("", "invalid duration ''"),
        ("5S", "invalid duration '5S'"),
        ("1d", "invalid duration '1d'"),
        ("-5s", "duration '-5s' must not be negative"),
        (-1, "duration -1 must not be negative"),
        (True, "invalid duration True"),
        (None, "invalid duration of type NoneType"),
        ([5], "invalid duration of type list"),
        (float("nan"), "is not a finite number"),
        (float("inf"), "is not a finite number"),
        (10**400, "is too large"),
        ("1" * 400 + "s", "is not a finite number"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("512B", 512),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("64KiB", 64 * 1024),
        ("10MB", 10_000_000),
        ("10MiB", 10 * 1024 * 1024),
        ("2GB", 2_000_000_000),
        ("3GiB", 3 * 1024**3),
        ("1.5KiB", 1536),
        ("64kib", 64 * 1024),
        (" 1 MiB ", 1024 * 1024),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10XB", "invalid size '10XB'"),
        ("MiB", "invalid size 'MiB'"),
        ("", "invalid size ''"),
        ("1.5B", "bytes must be a whole number"),
        ("1.5", "bytes must be a whole number"),
        (1.5, "invalid size 1.5"),
        (-1, "size -1 must not be negative"),
        ("-1KiB", "must not be negative"),
        (True, "invalid size True"),
        (None, "invalid size of type NoneType"),
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert message in str(info.value)


@given(st.integers(min_value=0, max_value=10**9))
def test_milliseconds_are_thousandths(n: int) -> None:
    assert parse_duration(f"{n}ms") == pytest.approx(n / 1000)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["s", "m", "h"]))
def test_units_scale_seconds(n: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{n}{unit}") == n * factor


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("KiB", 1024), ("MiB", 1024**2), ("KB", 1000), ("GB", 1000**3)]),
)
def test_size_units_multiply(n: int, unit: tuple[str, int]) -> None:
    assert parse_size(f"{n}{unit[0]}") == n * unit[1]


@given(st.text(max_size=20))
def test_arbitrary_text_gives_value_error_or_a_duration(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert seconds >= 0
