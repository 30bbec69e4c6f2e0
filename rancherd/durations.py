"""Go duration strings (``1m``, ``1h30m``, ``300ms``) to float seconds and back.

The original rancherd read ``serverCacheDuration`` with Go's ``time.ParseDuration``, and
go-discover's mDNS ``timeout`` is one too, so configs written for it keep their meaning.
A bare number is refused: it has no unit, and a Go program decoding it into a
``time.Duration`` would read nanoseconds, never what the writer meant.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_DURATION_NS",
    "MIN_DURATION_NS",
    "DurationError",
    "format_duration",
    "parse_duration",
    "parse_duration_ns",
]

MAX_DURATION_NS = 2**63 - 1
"""Go's ``time.Duration`` is an int64 of nanoseconds (about 292 years)."""
MIN_DURATION_NS = -(2**63)
"""The int64's most negative value, one further from zero than ``MAX_DURATION_NS``."""

_UNIT_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}

# One component: digits with an optional fraction (Go accepts "1.", ".5"), then a unit.
_COMPONENT = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")


class DurationError(ValueError):
    """A string that is not a Go duration; the message says how to write it."""


def parse_duration(text: str) -> float:
    """Parse a Go duration (``1m``, ``90s``, ``1h30m``, ``1.5h``, ``2h45m10.5s``) to seconds.

    Accepts exactly what Go's ``time.ParseDuration`` accepts (units ns, us, µs, ms, s, m,
    h; an optional sign; ``0`` alone), except that a bare number other than 0 gets a hint.
    Fractions of a nanosecond are truncated, as Go does.
    """
    return parse_duration_ns(text) / 1e9


def parse_duration_ns(text: str) -> int:
    """``parse_duration``, as Go's exact int64 of nanoseconds (a float cannot hold them all)."""
    original = text
    text = text.strip()
    if not text:
        raise DurationError("empty duration; write for example 60s or 1m")
    if _NUMBER.fullmatch(text):
        if text.lstrip("+-") == "0":
            return 0
        raise DurationError(
            f"{_shown(original)} has no unit; write {_bare_number_hint(text)} "
            "(units: ns, us, ms, s, m, h)"
        )
    sign = 1
    body = text
    if body[0] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body:
        raise DurationError(f"{_shown(original)} is not a duration; write for example 60s or 1m")
    total = 0
    position = 0
    while position < len(body):
        match = _COMPONENT.match(body, position)
        if match is None:
            raise DurationError(
                f"{_shown(original)} is not a duration; write for example 90s, 1m30s or 1.5h "
                "(units: ns, us, ms, s, m, h)"
            )
        number, unit = match.groups()
        total += _component_ns(number, _UNIT_NS[unit], original)
        position = match.end()
        if total > _ABS_LIMIT:
            raise _too_long(original)
    nanoseconds = sign * total
    if not MIN_DURATION_NS <= nanoseconds <= MAX_DURATION_NS:
        raise _too_long(original)
    return nanoseconds


_ABS_LIMIT = 2**63
"""Go accumulates the magnitude in a uint64 and refuses it past 2**63 at every step."""
_MAX_WHOLE_DIGITS = len(str(_ABS_LIMIT))
"""More digits than 2**63 has (leading zeros aside) are too long whatever the unit."""
_SHOWN = 40
"""Characters of a wrong duration quoted in a message; longer ones are cut."""


def _shown(text: str) -> str:
    """``repr`` of what was written, cut when long (a 5,000-digit number stays readable)."""
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[: _SHOWN // 2]!r}...({len(text)} characters)"


def _component_ns(number: str, unit: int, original: str) -> int:
    """One ``<number><unit>`` in nanoseconds, computed as Go's ``ParseDuration`` does.

    The whole part is exact; the fraction keeps at most the digits an int64 holds
    (``leadingFraction``) and is scaled in float64, truncated: ``0.3333333333333333333h``
    is 1200000000000ns in Go, one more than the exact value truncated.
    """
    whole_text, _, fraction_text = number.partition(".")
    if len(whole_text.lstrip("0")) > _MAX_WHOLE_DIGITS:
        raise _too_long(original)  # before int(): Python refuses to read 4,300+ digits
    whole = int(whole_text.lstrip("0") or "0")
    if whole > _ABS_LIMIT // unit:
        raise _too_long(original)
    fraction, scale = 0, 1.0
    for digit in fraction_text:
        if fraction > (2**63 - 1) // 10:
            break  # Go stops taking precision here; the rest of the digits are read and dropped
        candidate = fraction * 10 + int(digit)
        if candidate > _ABS_LIMIT:
            break
        fraction, scale = candidate, scale * 10
    value = whole * unit
    if fraction:
        value += int(float(fraction) * (float(unit) / scale))
    if value > _ABS_LIMIT:
        raise _too_long(original)
    return value


def _too_long(original: str) -> DurationError:
    return DurationError(f"{_shown(original)} is too long; the largest duration is about 292 years")


def _bare_number_hint(text: str) -> str:
    if len(text) > _SHOWN:
        return "60s"
    try:
        value = float(text)
    except ValueError:  # pragma: no cover - the regex only lets numbers through
        return "60s"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value)}s"
    return f"{text}s" if "e" not in text.lower() else "60s"


def format_duration(seconds: float) -> str:
    """Format seconds as a compact Go duration that ``parse_duration`` reads back.

    ``60.0 -> "1m"``, ``5400.0 -> "1h30m"``, ``0.3 -> "300ms"``, ``9910.5 -> "2h45m10.5s"``.
    Unlike Go's ``Duration.String`` zero components are left out ("1m", not "1m0s").
    """
    nanoseconds = round(seconds * 1e9)
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    nanoseconds = abs(nanoseconds)
    if nanoseconds < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("us", 1_000), ("ns", 1)):
            if nanoseconds >= size:
                return sign + _decimal(nanoseconds, size) + unit
    hours, rest = divmod(nanoseconds, _UNIT_NS["h"])
    minutes, rest = divmod(rest, _UNIT_NS["m"])
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(_decimal(rest, _UNIT_NS["s"]) + "s")
    return sign + "".join(parts)


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` written exactly, without trailing zeros (``1500, 1000 -> "1.5"``)."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")
