"""Reading positioned values as typed fields: strings, numbers, lists, maps, durations.

``Reader`` holds the typed readers every check builds on, and ``section``, which reads a
config dataclass from a YAML map through its fields' ``spec`` metadata (the key list, the
reader of each key, the required ones). Each reader returns the value or None, after
adding an issue naming the file, line and dotted key when the value is wrong.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

from rancherd.config.model import EMPTY, JsonValue, key_specs, yaml_keys
from rancherd.config.yamlvalues import (
    Entry,
    Issues,
    Map,
    Origin,
    Scalar,
    Seq,
    Value,
    describe,
    is_secret_path,
    join,
    kind_only,
    surprise,
)
from rancherd.durations import DurationError, parse_duration

__all__ = ["MAX_UNKNOWN_KEYS_LISTED", "Reader"]

MAX_UNKNOWN_KEYS_LISTED = 20
"""Unknown keys reported one by one in a map; the rest are counted in one more issue."""

_KINDS = {Map: "a map", Seq: "a list"}


class Reader:
    """The typed readers; subclasses add the checks of particular keys."""

    def __init__(self, issues: Issues) -> None:
        self.issues = issues

    def fail(self, where: Origin, path: str, message: str) -> None:
        self.issues.add(where, path, message)

    def keys(self, value: Map, path: str, known: Sequence[str]) -> None:
        """Report keys of ``value`` not in ``known``, with a suggestion when close.

        The first ``MAX_UNKNOWN_KEYS_LISTED`` are listed, the rest counted: a file of a
        hundred thousand stray keys is reported at once, not after minutes of guessing."""
        unknown = [(key, entry) for key, entry in value.entries.items() if key not in known]
        folded = {_fold(k): k for k in known}
        for key, entry in unknown[:MAX_UNKNOWN_KEYS_LISTED]:
            guess = folded.get(_fold(key))
            if guess is None and len(key) <= 64:
                close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
                guess = close[0] if close else None
            hint = f"; did you mean {guess!r}?" if guess else ""
            self.fail(entry.key_origin, join(path, key), f"unknown key{hint}")
        more = len(unknown) - MAX_UNKNOWN_KEYS_LISTED
        if more > 0:
            origin = unknown[MAX_UNKNOWN_KEYS_LISTED][1].key_origin
            self.fail(origin, path, f"{more} more unknown keys (not listed)")

    def where(self, entry: Entry) -> Origin:
        """The line to blame for a value: its own for a scalar, its key's for a block."""
        return entry.value.origin if isinstance(entry.value, Scalar) else entry.key_origin

    def wrong_kind(self, entry: Entry, path: str, expected: str) -> None:
        value = entry.value
        if isinstance(value, Scalar):
            guess = None if isinstance(value.value, str) else surprise(value)
            if is_secret_path(path):
                found = f"YAML read {kind_only(value)}"
            else:
                found = guess or f"YAML read {describe(value)}"
            quote = "; quote it" if expected == "a string" and value.plain else ""
            self.fail(self.where(entry), path, f"expected {expected}, but {found}{quote}")
        else:
            self.fail(self.where(entry), path, f"expected {expected}, found {_KINDS[type(value)]}")

    # -- scalars --

    def string(self, entry: Entry, path: str) -> str | None:
        """A string field: null means unset; YAML's guesses are refused."""
        value = entry.value
        if isinstance(value, Scalar) and isinstance(value.value, str):
            guess = surprise(value)
            if guess is not None:
                if is_secret_path(path):
                    guess = "YAML 1.2 (Go, k3s) reads the value as a number"
                self.fail(value.origin, path, f"{guess}; quote it")
                return None
            return value.value
        if isinstance(value, Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "a string")
        return None

    def line(self, entry: Entry, path: str) -> str | None:
        """A one-line string: a name, version, host or URL handed to k3s or to peers.

        A newline or another control character there would split a line of the runtime's
        config or a URL, so it is refused here rather than downstream."""
        text = self.string(entry, path)
        if text is not None and has_control(text):
            self.fail(self.where(entry), path, "holds a control character (a newline?); remove it")
            return None
        return text

    def integer(self, entry: Entry, path: str) -> int | None:
        value = entry.value
        if (
            isinstance(value, Scalar)
            and isinstance(value.value, int)
            and not isinstance(value.value, bool)
        ):
            guess = surprise(value)
            if guess is not None:
                self.fail(value.origin, path, f"{guess}; write the number plainly")
                return None
            return value.value
        if isinstance(value, Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "a whole number")
        return None

    def boolean(self, entry: Entry, path: str) -> bool | None:
        value = entry.value
        if isinstance(value, Scalar) and isinstance(value.value, bool):
            return value.value  # yes/on are clear in a yes-or-no field
        if isinstance(value, Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "true or false")
        return None

    def duration(self, entry: Entry, path: str) -> float | None:
        """A Go duration (``90s``, ``1m30s``); "" means unset, as for the original."""
        value = entry.value
        if isinstance(value, Scalar) and value.value == "":
            return None
        if isinstance(value, Scalar) and type(value.value) in (int, float):
            if ":" in value.text:
                hint = "write it as 1m30s"
            else:
                hint = f"write {value.text.strip()}s for seconds"
            self.fail(
                value.origin,
                path,
                f"{value.text} has no unit ({surprise(value) or 'a bare number'}); {hint}",
            )
            return None
        if isinstance(value, Scalar) and isinstance(value.value, str):
            text: str | None = value.value  # "1e3" gets the duration hint, not "quote it"
        else:
            text = self.string(entry, path)
        if text is None:
            return None
        try:
            seconds = parse_duration(text)
        except DurationError as exc:
            self.fail(self.where(entry), path, str(exc))
            return None
        if seconds <= 0:
            self.fail(self.where(entry), path, "must be longer than 0s")
            return None
        return seconds

    # -- lists and maps --

    def strings(self, entry: Entry, path: str) -> tuple[str, ...]:
        return self._strings(entry, path, self.string)

    def lines(self, entry: Entry, path: str) -> tuple[str, ...]:
        """A list of one-line strings (see ``line``)."""
        return self._strings(entry, path, self.line)

    def _strings(self, entry: Entry, path: str, read: Any) -> tuple[str, ...]:
        value = entry.value
        if isinstance(value, Scalar) and value.value is None:
            return ()
        if not isinstance(value, Seq):
            self.wrong_kind(entry, path, "a list of strings")
            return ()
        out = []
        for index, item in enumerate(value.items):
            text = read(Entry(item.origin, item), f"{path}[{index}]")
            if text is not None:
                out.append(text)
            elif isinstance(item, Scalar) and item.value is None:
                self.fail(item.origin, f"{path}[{index}]", "empty item in a list of strings")
        return tuple(out)

    def mapping(self, entry: Entry, path: str) -> Map | None:
        value = entry.value
        if isinstance(value, Map):
            return value
        if isinstance(value, Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "a map")
        return None

    def free(self, value: Value, path: str, *, check: bool = True) -> JsonValue:
        """A free-form value (Helm values, k3s options): any YAML, minus its surprises.

        ``check=False`` only freezes a value whose parts were checked already.
        """
        if isinstance(value, Map):
            return MappingProxyType(
                {
                    k: self.free(e.value, join(path, k), check=check)
                    for k, e in value.entries.items()
                }
            )
        if isinstance(value, Seq):
            return tuple(
                self.free(item, f"{path}[{i}]", check=check) for i, item in enumerate(value.items)
            )
        guess = surprise(value) if check else None
        if guess is not None:
            if is_secret_path(path):
                self.fail(value.origin, path, "YAML does not read this value as written; quote it")
            else:
                self.fail(value.origin, path, f"{guess}; {_remedy(value)}")
            return None
        if value.value is None or isinstance(value.value, bool | int | float | str):
            return cast(JsonValue, value.value)
        return None  # pragma: no cover - dates are surprises

    def free_map(self, entry: Entry, path: str) -> Mapping[str, JsonValue]:
        value = self.mapping(entry, path)
        if value is None:
            return EMPTY
        return cast(Mapping[str, JsonValue], self.free(value, path))

    # -- config dataclasses --

    def section(self, cls: type, value: Map, path: str, where: Origin) -> dict[str, Any]:
        """The fields of ``cls`` read from ``value`` (``cls(**fields)`` builds it).

        Unknown keys are reported; each known key is read by the ``Reader`` method its
        field's ``spec`` names; a missing required key is reported at ``where``."""
        self.keys(value, path, yaml_keys(cls))
        fields: dict[str, Any] = {}
        for name, key, spec in key_specs(cls):
            read = getattr(self, spec.read)
            for spelling in (key, *spec.aliases):
                entry = value.entries.get(spelling)
                if entry is None:
                    continue
                result = read(entry, join(path, spelling))
                if result is None:
                    continue
                if spec.aliases:  # lists written under several spellings: concatenated
                    result = fields.get(name, ()) + tuple(result)
                fields[name] = result
            if spec.required is not None and key not in value.entries:
                self.fail(where, join(path, key), spec.required)
        return fields


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (newline, tab, NUL, DEL, C1...)."""
    return any(unicodedata.category(char) == "Cc" for char in text)


def _fold(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _remedy(value: Scalar) -> str:
    """How to write a surprising free-form value so that it means one thing."""
    quoted = f"quote it ('{value.text}') for the string"
    if isinstance(value.value, bool):
        return f"{quoted}, or write {str(value.value).lower()}"
    if isinstance(value.value, int | float) and value.value == value.value:
        return f"{quoted}, or write {value.value!r}"
    return quoted
