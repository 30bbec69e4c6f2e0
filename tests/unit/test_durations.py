from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rancherd.durations import (
    MAX_DURATION_NS,
    MIN_DURATION_NS,
    DurationError,
    format_duration,
    parse_duration,
    parse_duration_ns,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m", 60.0),
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("2h45m10.5s", 9910.5),
        ("1ns", 1e-9),
        ("1us", 1e-6),
        ("1µs", 1e-6),  # MICRO SIGN
        ("1μs", 1e-6),  # GREEK SMALL LETTER MU
        ("1.s", 1.0),  # Go accepts a trailing dot
        (".5s", 0.5),  # and a leading one
        ("0", 0.0),  # and 0 alone
        ("-1m", -60.0),
        ("+5s", 5.0),
        ("1h1h", 7200.0),  # Go adds repeated units
        (" 1m ", 60.0),
    ],
)
def test_parse_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0)


@pytest.mark.parametrize(("text", "hint"), [("60", "write 60s"), ("1.5", "write 1.5s")])
def test_bare_number_gets_a_hint(text: str, hint: str) -> None:
    with pytest.raises(DurationError, match=hint):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", " ", "+", "-", "1d", "m", "1mm", "1m 2s", "1M", "s1", "1e3s"])
def test_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_fraction_of_a_nanosecond_is_truncated_like_go() -> None:
    assert parse_duration("1.9ns") == 1e-9


def test_longest_go_duration() -> None:
    assert parse_duration(f"{MAX_DURATION_NS}ns") == MAX_DURATION_NS / 1e9
    with pytest.raises(DurationError, match="too long"):
        parse_duration(f"{MAX_DURATION_NS + 1}ns")


@pytest.mark.parametrize(
    "text", ["-9223372036854775808ns", "-9223372036854775.808us", "-2562047h47m16.854775808s"]
)
def test_most_negative_go_duration_is_one_past_the_longest(text: str) -> None:
    # An int64 reaches one further below zero than above it; Go accepts every spelling.
    assert parse_duration_ns(text) == MIN_DURATION_NS == -MAX_DURATION_NS - 1
    with pytest.raises(DurationError, match="too long"):
        parse_duration_ns(text.lstrip("-"))
    with pytest.raises(DurationError, match="too long"):
        parse_duration_ns(f"{MIN_DURATION_NS - 1}ns")


def test_fractions_are_scaled_in_float64_like_go() -> None:
    # Exact arithmetic gives 1199999999999ns; Go's float64 scaling gives 1200000000000.
    assert parse_duration_ns("0.3333333333333333333h") == 1_200_000_000_000
    # Digits past what an int64 holds are read and dropped, not an overflow.
    assert parse_duration_ns("0.830103483285477580700h") == 2_988_372_539_827


def test_unicode_digits_are_not_numbers() -> None:
    with pytest.raises(DurationError):
        parse_duration("١m")  # ARABIC-INDIC DIGIT ONE


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60.0, "1m"),
        (5400.0, "1h30m"),
        (0.3, "300ms"),
        (9910.5, "2h45m10.5s"),
        (0.0, "0s"),
        (-90.0, "-1m30s"),
        (1.5e-6, "1.5us"),
        (3600.000000001, "1h0.000000001s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_round_trips(nanoseconds: int) -> None:
    seconds = nanoseconds / 1e9
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(["ns", "us", "ms", "s", "m", "h"])),
        min_size=1,
        max_size=6,
    )
)
def test_components_add_up(parts: list[tuple[int, str]]) -> None:
    unit_ns = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    text = "".join(f"{number}{unit}" for number, unit in parts)
    total = sum(number * unit_ns[unit] for number, unit in parts)
    if total > MAX_DURATION_NS:
        with pytest.raises(DurationError, match="too long"):
            parse_duration(text)
    else:
        assert parse_duration(text) == total / 1e9
