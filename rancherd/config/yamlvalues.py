"""YAML values that remember where they were written, read within fixed bounds.

``compose_yaml`` parses one document into PyYAML nodes while counting: more than
``MAX_VALUES`` nodes or ``MAX_COMPOSE_DEPTH`` levels stop it at once, with the line, so a
16 MiB flow sequence or a 100,000-deep nesting costs a fraction of a second, not minutes.
Events come from libyaml when PyYAML has it (twenty times faster); on a syntax error the
file is parsed again by the pure-Python parser, whose messages are the ones users see.

``Converter`` turns nodes into ``Scalar``/``Seq``/``Map`` values carrying an ``Origin``
(file and line), refusing what YAML hides (duplicate keys, non-string keys, tags) and
bounding alias expansion. Problems go to an ``Issues`` collector, never stopping at the
first. The config loader and the simulator's scenario loader both read YAML this way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.error import MarkedYAMLError, YAMLError
from yaml.events import (
    CollectionEndEvent,
    CollectionStartEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from rancherd.config.model import ConfigIssue, is_secret_name

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUES",
    "Composed",
    "Converter",
    "Entry",
    "Issues",
    "Map",
    "Origin",
    "Scalar",
    "Seq",
    "Value",
    "compose_yaml",
    "describe",
    "is_secret_path",
    "join",
    "kind_only",
    "merge",
    "surprise",
]

MAX_DEPTH = 64
MAX_VALUES = 200_000
"""Bounds on nesting and on values after alias expansion (a "billion laughs" file)."""
MAX_COMPOSE_DEPTH = 200
"""Nesting the composer itself refuses (it recurses: far deeper would exhaust the stack);
between ``MAX_DEPTH`` and this, the converter reports the dotted key as well."""

# --- Values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Scalar:
    origin: Origin
    value: object
    """What YAML made of it: str, int, float, bool, None or a date."""
    tag: str
    plain: bool
    """Written without quotes, so YAML guessed its type."""
    text: str
    """As written."""


@dataclass(frozen=True, slots=True)
class Seq:
    origin: Origin
    items: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Entry:
    key_origin: Origin
    value: Value


@dataclass(frozen=True, slots=True)
class Map:
    origin: Origin
    entries: Mapping[str, Entry]


Value: TypeAlias = Scalar | Seq | Map


def merge(base: Value | None, new: Value) -> Value:
    """Maps merge recursively, lists concatenate, anything else: the later one wins."""
    if isinstance(base, Map) and isinstance(new, Map):
        entries = dict(base.entries)
        for key, entry in new.entries.items():
            old = entries.get(key)
            value = entry.value if old is None else merge(old.value, entry.value)
            entries[key] = Entry(entry.key_origin, value)
        return Map(new.origin, entries)
    if isinstance(base, Seq) and isinstance(new, Seq):
        return Seq(new.origin, base.items + new.items)
    return new


class Issues:
    """Collects issues; never stops at the first."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, origin: Origin | None, key: str, message: str) -> None:
        if origin is None:
            self.items.append(ConfigIssue(None, None, key, message))
        else:
            self.items.append(ConfigIssue(origin.file, origin.line, key, message))

    def add_file(self, file: str, line: int | None, message: str) -> None:
        self.items.append(ConfigIssue(file, line, "", message))

    def __len__(self) -> int:
        return len(self.items)


def is_secret_path(path: str) -> bool:
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return is_secret_name(last)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- Composing within bounds ----------------------------------------------------------


class _Refused(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _BoundedComposer(Composer):
    """PyYAML's composer, counting nodes and depth as it goes; notes explicit tags.

    Mixed with an event source (the pure-Python ``Parser`` or libyaml's ``CParser``),
    which gives ``peek_event`` and ``get_event``."""

    def bound(self) -> None:
        self.nodes = 0
        self.depth = 0
        self.explicit: set[int] = set()
        """``id`` of the scalar nodes whose tag was written (``!!str 1e3``)."""

    def _next_line(self) -> int:
        events: Any = self
        return int(events.peek_event().start_mark.line) + 1

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if not (isinstance(parent, MappingNode) and index is None):  # keys are not values
            self.nodes += 1
        self.depth += 1
        try:
            if self.nodes > MAX_VALUES:
                raise _Refused(self._next_line(), "too many values (aliases expanding?); refused")
            if self.depth > MAX_COMPOSE_DEPTH:
                raise _Refused(
                    self._next_line(),
                    f"nested too deeply to read (more than {MAX_COMPOSE_DEPTH} levels)",
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        events: Any = self
        event: ScalarEvent = events.get_event()
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(ScalarNode, event.value, event.implicit)  # type: ignore[attr-defined]
        # libyaml says '' for a plain scalar, the pure-Python parser None.
        style = event.style or None
        marks: Any = (event.start_mark, event.end_mark)
        node = ScalarNode(str(tag), event.value, marks[0], marks[1], style=style)
        if event.tag is not None:  # "!!str 1e3", "! 1e3": the writer chose, YAML did not guess
            self.explicit.add(id(node))
        if anchor is not None:
            self.anchors[anchor] = node
        return node


class _PyEvents(Reader, Scanner, Parser, _BoundedComposer, Resolver):
    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        Resolver.__init__(self)
        self.bound()


class _PyParser(Reader, Scanner, Parser):
    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


def _count_py_events(text: str) -> None:
    """``_count`` on the pure-Python parser's events (when PyYAML lacks libyaml)."""
    _count(_PyParser(text))


_EVENT_SOURCES: list[Callable[[str], _BoundedComposer]] = []
_count_events: Callable[[str], None] | None = _count_py_events
try:
    from yaml._yaml import CParser

    class _CEvents(_BoundedComposer, Resolver, CParser):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            Resolver.__init__(self)
            self.bound()

    def _count_c_events(text: str) -> None:
        """Count values and depth on libyaml's events, building nothing: a file over a
        bound is refused at the cost of reading ``MAX_VALUES`` events (a tenth of a
        second), before any node is built."""
        parser = CParser(text)
        try:
            _count(parser)
        finally:
            parser.dispose()

    _EVENT_SOURCES.append(_CEvents)
    _count_events = _count_c_events
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass
_EVENT_SOURCES.append(_PyEvents)


def _line_of(event: NodeEvent) -> int:
    mark: Any = event.start_mark
    return int(mark.line) + 1


def _count(parser: Any) -> None:
    """Raise ``_Refused`` at the first value over ``MAX_VALUES`` or level over the depth."""
    values = 0
    open_collections: list[list[int]] = []
    """Per open collection: [1 for a map, 0 for a list; children seen so far]."""
    while parser.check_event():
        event = parser.get_event()
        if isinstance(event, CollectionEndEvent):
            open_collections.pop()
            continue
        if not isinstance(event, NodeEvent):
            continue
        top = open_collections[-1] if open_collections else None
        if top is not None:
            top[1] += 1
        if top is None or not (top[0] and top[1] % 2):  # a map's odd children are keys
            values += 1
            if values > MAX_VALUES:
                line = _line_of(event)
                raise _Refused(line, "too many values (aliases expanding?); refused")
        if isinstance(event, CollectionStartEvent):
            open_collections.append([int(isinstance(event, MappingStartEvent)), 0])
            if len(open_collections) > MAX_COMPOSE_DEPTH:
                line = _line_of(event)
                raise _Refused(
                    line, f"nested too deeply to read (more than {MAX_COMPOSE_DEPTH} levels)"
                )


@dataclass(frozen=True, slots=True)
class Composed:
    """One document's root node (None: empty) and its explicitly tagged scalars."""

    root: Node | None
    explicit: frozenset[int]


def compose_yaml(text: str, file: str, issues: Issues) -> Composed | None:
    """The document's nodes, or None with a file issue (syntax, a limit, a bad character)."""
    sources = _EVENT_SOURCES
    if _count_events is not None:
        try:
            _count_events(text)
        except _Refused as exc:
            issues.add_file(file, exc.line, exc.message)
            return None
        except Exception:
            sources = _EVENT_SOURCES[-1:]  # libyaml's messages differ: the pure-Python words them
    for index, source in enumerate(sources):
        last = index == len(sources) - 1
        try:
            composer = source(text)
            try:
                root = composer.get_single_node()
            finally:
                disposable: Any = composer
                disposable.dispose()
            return Composed(root, frozenset(composer.explicit))
        except _Refused as exc:
            issues.add_file(file, exc.line, exc.message)
            return None
        except RecursionError:
            issues.add_file(file, None, "nested too deeply to read")
            return None
        except Exception as exc:
            if not last:
                continue  # libyaml's messages differ: the pure-Python parser words them
            _syntax_issue(exc, text, file, issues)
            return None
    raise AssertionError("unreachable")  # pragma: no cover


def _syntax_issue(exc: Exception, text: str, file: str, issues: Issues) -> None:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        issues.add_file(file, line, _syntax_message(exc, text, line))
    elif isinstance(exc, ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        issues.add_file(file, line, f"YAML cannot hold the character U+{code:04X}; remove it")
    elif isinstance(exc, YAMLError):
        issues.add_file(file, None, "not valid YAML")
    else:
        raise exc


_TOKEN_LINE = re.compile(r"""\s*(-\s*)?["']?token["']?\s*:""")


def _syntax_message(exc: MarkedYAMLError, text: str, line: int | None) -> str:
    lines = text.splitlines()
    if line is not None and 0 < line <= len(lines) and _TOKEN_LINE.match(lines[line - 1]):
        # PyYAML quotes what it found; on the token's line that could be the token.
        return "YAML syntax error on the token's line (details hidden: it is a secret)"
    problem = exc.problem or exc.context or "syntax error"
    if not (exc.context and exc.problem and exc.context_mark is not None):
        return f"YAML syntax error: {problem}"
    context = f"{exc.context} at line {exc.context_mark.line + 1}"
    if problem.startswith("but "):  # "expected a single document ..., but found another"
        return f"YAML syntax error: {context}, {problem}"
    return f"YAML syntax error: {problem} ({context})"


# --- Nodes to values ------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_SURROGATE = re.compile("[\ud800-\udfff]")


class Converter:
    """Turns one file's composed YAML into ``Value``s, reporting what YAML hides."""

    def __init__(
        self,
        file: str,
        issues: Issues,
        explicit: frozenset[int] = frozenset(),
        root_keys: Collection[str] | None = None,
    ) -> None:
        self.file = file
        self.issues = issues
        self.explicit = explicit
        self.root_keys = root_keys
        """The keys a schema knows at the top: the values of others are not converted
        (they are reported as unknown keys, whatever they hold)."""
        self.budget = MAX_VALUES
        self.constructor = SafeConstructor()

    def origin(self, node: Node) -> Origin:
        return Origin(self.file, node.start_mark.line + 1)

    def convert(self, node: Node, path: str, depth: int = 0) -> Value | None:
        self.budget -= 1
        if self.budget < 0:
            if self.budget == -1:
                self.issues.add(
                    self.origin(node), path, "too many values (aliases expanding?); refused"
                )
            return None
        if depth > MAX_DEPTH:
            self.issues.add(self.origin(node), path, f"nested deeper than {MAX_DEPTH} levels")
            return None
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                self.unsupported_tag(node, path)
                return None
            items = []
            for index, child in enumerate(node.value):
                item = self.convert(child, f"{path}[{index}]", depth + 1)
                if item is not None:
                    items.append(item)
            return Seq(self.origin(node), tuple(items))
        if isinstance(node, MappingNode):
            if node.tag != _TAG + "map":
                self.unsupported_tag(node, path)
                return None
            return self.mapping(node, path, depth)
        return None  # pragma: no cover - compose yields only these three

    def unsupported_tag(self, node: Node, path: str) -> None:
        tag = node.tag.replace(_TAG, "!!")
        shown = "" if is_secret_path(path) else f" {tag}"
        self.issues.add(self.origin(node), path, f"unsupported YAML tag{shown}")

    def scalar(self, node: ScalarNode, path: str) -> Scalar | None:
        origin = self.origin(node)
        if node.tag not in _PLAIN_TAGS:
            if node.tag == _TAG + "binary" and not is_secret_path(path):
                self.issues.add(origin, path, "binary values (!!binary) are not supported")
                return None
            self.unsupported_tag(node, path)
            return None
        surrogate = _SURROGATE.search(node.value)
        if surrogate is not None:
            # "\ud800" is valid YAML but no valid text: encoding it later would crash.
            code = f" U+{ord(surrogate.group()):04X}" if not is_secret_path(path) else ""
            self.issues.add(origin, path, f"holds a lone surrogate{code}, not text; remove it")
            return None
        try:
            value = self.constructor.construct_object(node)
        except Exception:  # PyYAML raises ValueError for 2024-13-45 and 5,000-digit numbers
            what = "this value" if is_secret_path(path) else _shortened(node.value)
            self.issues.add(
                origin,
                path,
                f"YAML 1.1 reads {what} as a {node.tag.removeprefix(_TAG)} but "
                "cannot make one of it; quote it",
            )
            return None
        # "Plain" means YAML guessed the type: no quotes and no tag written (!!str 0123).
        guessed = node.style is None and id(node) not in self.explicit
        return Scalar(origin, value, node.tag, guessed, node.value)

    def key(self, node: Node, path: str) -> str | None:
        """A map key as a string, or None (and an issue) when YAML read something else."""
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            if _SURROGATE.search(node.value):
                self.issues.add(self.origin(node), path, "a key holds a lone surrogate; remove it")
                return None
            return str(node.value)
        origin = self.origin(node)
        if isinstance(node, ScalarNode) and node.tag in _PLAIN_TAGS:
            scalar = self.scalar(node, path)
            if scalar is not None:
                self.issues.add(
                    origin,
                    path,
                    f"the key {_shortened(node.value)} is read as {describe(scalar)}; keys must "
                    f"be strings: quote it",
                )
            return None
        self.issues.add(origin, path, "keys must be strings")
        return None

    def mapping(self, node: MappingNode, path: str, depth: int) -> Map:
        entries: dict[str, Entry] = {}
        first_line: dict[str, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            key_origin = self.origin(key_node)
            if key in first_line:
                self.issues.add(
                    key_origin,
                    join(path, key),
                    f"duplicate key (first at line {first_line[key]}); YAML would keep only "
                    "the last: remove one",
                )
                continue
            first_line[key] = key_origin.line
            if depth == 0 and self.root_keys is not None and key not in self.root_keys:
                entries[key] = Entry(key_origin, Scalar(key_origin, None, _TAG + "null", False, ""))
                continue
            value = self.convert(value_node, join(path, key), depth + 1)
            if value is not None:
                entries[key] = Entry(key_origin, value)
        # YAML merge keys ("<<: *defaults"): keys written in the map win; earlier merged
        # maps win over later ones, as PyYAML's flatten_mapping does.
        for merge_node in merges:
            sources = merge_node.value if isinstance(merge_node, SequenceNode) else [merge_node]
            for source in sources:
                merged = self.convert(source, path, depth + 1)
                if not isinstance(merged, Map):
                    self.issues.add(self.origin(source), path, "<< merges only maps")
                    continue
                for key, entry in merged.entries.items():
                    entries.setdefault(key, entry)
        return Map(self.origin(node), entries)


def _shortened(text: str, limit: int = 80) -> str:
    """``repr`` of a value for a message, cut in the middle when long (5,000 digits...)."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[: limit // 2]) + f"...({len(text)} characters)"


def describe(scalar: Scalar) -> str:
    """What YAML made of a scalar, for messages: "the number 83", "the bool true"..."""
    value = scalar.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, int):
        return f"the number {value}" if len(scalar.text) <= 80 else "a number"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_shortened(value)}"
    return f"the date {value}"


def kind_only(value: Scalar) -> str:
    """Like ``describe`` without the value, for secrets."""
    if value.value is None:
        return "null"
    if isinstance(value.value, bool):
        return "a bool"
    if isinstance(value.value, int | float):
        return "a number"
    if isinstance(value.value, str):
        return "a string"
    return "a date"


_OCTAL = re.compile(r"[-+]?0[0-7_]+")
_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_YAML12_OCTAL = re.compile(r"0o[0-7]+")


def surprise(scalar: Scalar) -> str | None:
    """How an unquoted scalar reads differently from how it looks, or None.

    Covers YAML 1.1 readings (PyYAML's and the original's) and YAML 1.2 readings
    (Go's, thus k3s's and Helm's, when we hand values on).
    """
    if not scalar.plain:
        return None
    text, value = scalar.text, scalar.value
    if isinstance(value, bool):
        if text.lower() in ("true", "false"):
            return None
        return f"YAML 1.1 reads {text} as the bool {str(value).lower()}"
    if isinstance(value, int):
        return _int_surprise(text, value)
    if isinstance(value, float):
        if ":" in text:
            return f"YAML 1.1 reads {text} as the sexagesimal (base 60) number {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return f"YAML reads {text} as {value!r}, which JSON and Go cannot carry"
        return None
    if isinstance(value, str):
        if _YAML12_FLOAT.fullmatch(text) or _YAML12_OCTAL.fullmatch(text):
            shown = text if len(text) <= 80 else _shortened(text)
            return f"YAML 1.2 (Go, k3s, Helm) reads {shown} as a number"
        return None
    if value is None:
        return None
    return f"YAML 1.1 reads {text} as a date"


def _int_surprise(text: str, value: int) -> str | None:
    if ":" in text:
        return f"YAML 1.1 reads {text} as the sexagesimal (base 60) number {value}"
    if _OCTAL.fullmatch(text):
        return f"YAML 1.1 reads {text} as the octal number {value}"
    return None
