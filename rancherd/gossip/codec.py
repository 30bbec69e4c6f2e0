"""Wire encoding of gossip messages: msgpack, driven by the schema in ``messages.py``.

A message is one msgpack array ``[tag, field1, field2, ...]`` with the fields in dataclass
order. Nested dataclasses are arrays too, ``None`` is nil, ``IntEnum`` members are ints,
tuples are arrays, ``bytes`` are bin, and nothing else appears: no maps, no floats, no
extension types. The codec walks the type hints of ``messages.py`` once, at import, and
builds one converter per type; a field it has no limit for stops the import.

Guarantees:

- ``decode`` raises ``RemoteProtocolError`` and nothing else, whatever the bytes. It
  refuses input longer than ``MAX_MESSAGE_SIZE`` before parsing it, and msgpack refuses a
  declared length above our limits before allocating it.
- What ``decode`` returns satisfies every rule below; ``encode`` checks the same rules and
  raises ``LocalProtocolError`` for a message that breaks one (a bug on our side), so no
  node can send what its peers would reject.
- Rules: ints are ``0 .. 2**64-1`` (protocol versions ``1 .. 65535``, ``min <= max``); a
  bool is never an int nor an int a bool; enum values must be known; node ids satisfy
  ``is_node_id``; ``view`` and ``members`` are sorted without duplicates; addresses are
  ``host:port`` (IPv6 in brackets, port ``1 .. 65535``); hosts and cluster ids use a small
  safe alphabet; ``Hello.nonce`` is 32 bytes; every string and tuple has a length limit
  (the constants below).

Sealing, the handshake and the frame format live in ``security.py``.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import types
import typing
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, NamedTuple

import msgpack

from rancherd.addresses import NODE_ID_PATTERN
from rancherd.gossip.errors import LocalProtocolError, RemoteProtocolError
from rancherd.gossip.messages import (
    MESSAGE_TYPES,
    NODE_ID_LENGTH,
    VIEW_DIGEST_SIZE,
    Decision,
    Gossip,
    Hello,
    Message,
    NodeRecord,
    Progress,
    Role,
    Tag,
    Vote,
)

__all__ = [
    "CLUSTER_ID_PATTERN",
    "GOSSIP_ENVELOPE_BYTES",
    "MAX_ADDRESSES",
    "MAX_ADDRESS_LENGTH",
    "MAX_CLUSTER_ID_LENGTH",
    "MAX_FRAME",
    "MAX_FRAME_OVERHEAD",
    "MAX_HOST_LENGTH",
    "MAX_MEMBERS",
    "MAX_MESSAGE_SIZE",
    "MAX_RECORDS",
    "MAX_RELEASED",
    "MAX_UINT",
    "MAX_VERSION",
    "MAX_VIEW",
    "NONCE_SIZE",
    "RecordFilter",
    "decode",
    "encode",
    "estimate_record_size",
    "wire_problem",
]

# --- Limits -------------------------------------------------------------------------------

MAX_FRAME = 64 * 1024
"""Largest sealed frame on the wire. A Gossip of a few dozen typical records fits; more
records go in the next frame (the core sizes each Gossip with ``estimate_record_size``,
which never counts short). Small enough that a peer can
make us buffer, decrypt and parse at most 64 KiB per frame."""

MAX_FRAME_OVERHEAD = 12 + 16
"""Bytes sealing adds around a message, in the worse of the two frame kinds: a hello
frame's 12-byte random AEAD nonce (a session frame's counter is 8) plus the 16-byte tag."""

MAX_MESSAGE_SIZE = MAX_FRAME - MAX_FRAME_OVERHEAD
"""Largest encoded message, so that any message fits in either kind of frame."""

MAX_UINT = 2**64 - 1
"""Counters, rounds, nonces and boot ids are unsigned 64-bit: the largest msgpack int, and
more than a node can count to in its lifetime."""

MAX_VERSION = 2**16 - 1
"""Protocol versions are small positive numbers; 16 bits is room for every bump we will make."""

NONCE_SIZE = 32
"""``Hello.nonce``: 256 random bits, so two connections never share session keys."""

MAX_HOST_LENGTH = 253
"""Longest DNS name; every IP literal is shorter."""

MAX_ADDRESS_LENGTH = 255
"""A host of ``MAX_HOST_LENGTH`` does not fit with a port; 255 is the common limit for a
``host:port`` string and is the longest string of the protocol."""

MAX_CLUSTER_ID_LENGTH = 64
"""A SHA-256 digest in hex; a random 128-bit id (32 characters) fits with room to spare."""

MAX_ADDRESSES = 16
"""Gossip endpoints per record: a machine with many interfaces and both IP families
advertises a handful; sixteen is already a misconfiguration."""

MAX_VIEW = 128
"""Servers in a view. Control planes have 3, 5 or 7 servers; ``expectedServers`` is small
and "more servers than N" means a few more, not hundreds."""

MAX_MEMBERS = MAX_VIEW
"""``Decision.members`` is the view that committed it."""

MAX_RECORDS = 512
"""Records per Gossip: every server plus the agents. The frame size binds first for
records with large views; this bounds the work of a Gossip of tiny records."""

MAX_RELEASED = 8
"""``NodeRecord.released`` keeps only a proposer's last few abandoned rounds."""

_VERSION_RANGE = (1, MAX_VERSION)

_NODE_ID_FIELDS = frozenset({"node_id", "proposer", "voter", "init_node"})
_HOST_FIELDS = frozenset({"api_host", "init_host"})

# Bounds of each tuple field (by field name), and whether it must be sorted and unique.
_TUPLE_LIMITS: dict[str, tuple[int, bool]] = {
    "records": (MAX_RECORDS, False),
    "addresses": (MAX_ADDRESSES, False),
    "view": (MAX_VIEW, True),
    "members": (MAX_MEMBERS, True),
    "released": (MAX_RELEASED, False),
}

# Exact byte lengths of each bytes field, by (message, field).
_BYTES_LENGTHS: dict[tuple[type, str], int] = {
    (Hello, "nonce"): NONCE_SIZE,
    (NodeRecord, "view_digest"): VIEW_DIGEST_SIZE,
}

# Int fields whose range is not the default 0 .. MAX_UINT.
_INT_RANGES: dict[tuple[type, str], tuple[int, int]] = {
    (Hello, "min_version"): _VERSION_RANGE,
    (Hello, "max_version"): _VERSION_RANGE,
    (NodeRecord, "view_size"): (0, MAX_VIEW),
}

# Text rules. Hosts end up in the runtime's config files and in URLs
# (``server: https://<init_host>:6443``), so only characters of names and IP literals pass:
# no spaces, newlines, quotes, slashes, ``@`` or ``#``.
_NAME = f"[0-9A-Za-z._-]{{1,{MAX_HOST_LENGTH}}}"  # a DNS name or an IPv4 literal
_IPV6 = "[0-9A-Fa-f:.]{2,45}"  # 45: the longest IPv6 literal (with an embedded IPv4)
_HOST_RE = re.compile(f"{_NAME}|{_IPV6}")
# An address is dialled, never written into a config file, so an IPv6 zone may appear.
_ADDRESS_RE = re.compile(
    rf"(?:{_NAME}|\[{_IPV6}(?:%[0-9A-Za-z_.-]{{1,64}})?\]):([1-9][0-9]{{0,4}})"
)
CLUSTER_ID_PATTERN = re.compile(f"[0-9a-f]{{1,{MAX_CLUSTER_ID_LENGTH}}}")


# --- Sizes ---------------------------------------------------------------------------------

_ID_BYTES = 2 + 32  # str8 header + 32 characters
_UINT_BYTES = 9  # uint64 with its marker, the widest msgpack int
_ARRAY_BYTES = 3  # array16 header
_VOTE_BYTES = _ARRAY_BYTES + _ID_BYTES + 2 * _UINT_BYTES
GOSSIP_ENVELOPE_BYTES = 8
"""Bytes of a Gossip besides its records (array headers, tag, want_reply), rounded up."""


_DIGEST_BYTES = 2 + VIEW_DIGEST_SIZE  # bin8 header + digest
_RECORD_BASE_BYTES = (
    _ARRAY_BYTES + _ID_BYTES + 6 * _UINT_BYTES + _DIGEST_BYTES + 2 * _ARRAY_BYTES + 2
)
_DECISION_BASE_BYTES = 2 * _ARRAY_BYTES + 4 + _ID_BYTES + _UINT_BYTES


def estimate_record_size(record: NodeRecord) -> int:
    """Bytes the codec needs for ``record``, or more (never less).

    Every string the codec accepts is ASCII (its alphabets), so a character is a byte; each
    string gets the widest header it could need, each int nine bytes.
    """
    addresses = record.addresses
    size = (
        _RECORD_BASE_BYTES
        + len(record.api_host)
        + 2 * len(addresses)
        + sum(map(len, addresses))
        + _VOTE_BYTES * (1 + len(record.released))
    )
    decision = record.decision
    if decision is not None:
        size += _DECISION_BASE_BYTES + len(decision.cluster_id) + len(decision.init_host)
        size += _ID_BYTES * len(decision.members)
    return size


# --- Converters ---------------------------------------------------------------------------


class _Invalid(Exception):
    """A value breaks a rule; ``encode`` and ``decode`` turn it into the right error."""


class _Converter(NamedTuple):
    to_wire: Callable[[Any], Any]
    """Check a Python value and return what msgpack should pack."""
    from_wire: Callable[[Any], Any]
    """Check an unpacked value (tuples for arrays) and build the Python value."""
    all_valid: Callable[[tuple[Any, ...]], bool] | None = None
    """For items that convert to themselves: check a whole tuple of them at C speed (a
    batch regex), so a tuple of them is passed through; the per-item check then only runs
    to explain a failure."""


def _check_uint(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not int:
            raise _Invalid(f"expected an int, got {type(value).__name__}")
        if not low <= value <= high:
            raise _Invalid(f"int {value} outside {low}..{high}")
        return value

    return check


def _check_bool(value: Any) -> Any:
    if type(value) is not bool:
        raise _Invalid(f"expected a bool, got {type(value).__name__}")
    return value


def _check_text(what: str, matches: Callable[[str], object], max_length: int) -> Callable[..., Any]:
    def check(value: Any) -> Any:
        if type(value) is not str:
            raise _Invalid(f"expected a {what} string, got {type(value).__name__}")
        if len(value) > max_length or not matches(value):
            raise _Invalid(f"not a valid {what}: {value[:64]!r}")
        return value

    return check


def _is_address(value: str) -> bool:
    match = _ADDRESS_RE.fullmatch(value)
    return match is not None and int(match[1]) <= 65535


_check_node_id = _check_text("node id", NODE_ID_PATTERN.fullmatch, NODE_ID_LENGTH)


def _all_node_ids(values: tuple[Any, ...]) -> bool:
    try:
        return all(map(NODE_ID_PATTERN.fullmatch, values))
    except TypeError:  # an item that is not a str
        return False


_check_host = _check_text("host", _HOST_RE.fullmatch, MAX_HOST_LENGTH)
_check_address = _check_text("host:port address", _is_address, MAX_ADDRESS_LENGTH)
_check_cluster_id = _check_text("cluster id", CLUSTER_ID_PATTERN.fullmatch, MAX_CLUSTER_ID_LENGTH)


def _check_bytes(length: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not bytes:
            raise _Invalid(f"expected bytes, got {type(value).__name__}")
        if len(value) != length:
            raise _Invalid(f"expected {length} bytes, got {len(value)}")
        return value

    return check


def _plain(
    check: Callable[[Any], Any], all_valid: Callable[[tuple[Any, ...]], bool] | None = None
) -> _Converter:
    return _Converter(check, check, all_valid)


def _enum(enum: type[IntEnum]) -> _Converter:
    by_value = {int(member): member for member in enum}

    def to_wire(value: Any) -> Any:
        if type(value) is not enum:
            raise _Invalid(f"expected a {enum.__name__}, got {type(value).__name__}")
        return int(value)

    def from_wire(value: Any) -> Any:
        member = by_value.get(value) if type(value) is int else None
        if member is None:
            shown = value if type(value) is int else f"a {type(value).__name__}"
            raise _Invalid(f"not a {enum.__name__}: {shown}")
        return member

    return _Converter(to_wire, from_wire)


def _optional(inner: _Converter) -> _Converter:
    inner_to, inner_from = inner.to_wire, inner.from_wire

    def to_wire(value: Any) -> Any:
        return None if value is None else inner_to(value)

    def from_wire(value: Any) -> Any:
        return None if value is None else inner_from(value)

    return _Converter(to_wire, from_wire)


def _tuple(item: _Converter, max_length: int, strictly_sorted: bool) -> _Converter:
    item_to, item_from, all_valid = item.to_wire, item.from_wire, item.all_valid

    def check_length(value: Any) -> None:
        if type(value) is not tuple:
            raise _Invalid(f"expected an array, got {type(value).__name__}")
        if len(value) > max_length:
            raise _Invalid(f"{len(value)} items, at most {max_length} allowed")

    def check_order(value: tuple[Any, ...]) -> None:
        if not all(map(operator.lt, value, value[1:])):
            index = next(i for i in range(1, len(value)) if not value[i - 1] < value[i])
            raise _Invalid(f"[{index}] not sorted, or a duplicate")

    def to_wire(value: Any) -> Any:
        check_length(value)
        wire = value if all_valid is not None and all_valid(value) else _each(item_to, value)
        if strictly_sorted:
            check_order(value)
        return wire

    def from_wire(value: Any) -> Any:
        check_length(value)
        if all_valid is None or not all_valid(value):
            value = tuple(_each(item_from, value))
        if strictly_sorted:
            check_order(value)
        return value

    return _Converter(to_wire, from_wire)


def _each(convert: Callable[[Any], Any], items: tuple[Any, ...]) -> list[Any]:
    """``convert`` applied to every item; an error names the index of the first bad one."""
    try:
        return [convert(x) for x in items]
    except _Invalid:
        pass
    for index, item in enumerate(items):  # cold path: find which one
        try:
            convert(item)
        except _Invalid as error:
            raise _Invalid(f"[{index}] {error}") from None
    raise AssertionError("unreachable: a converter failed only once")


def _dataclass(cls: type, fields: list[tuple[str, _Converter]], tag: int | None) -> _Converter:
    names = [name for name, _ in fields]
    to_fns = [converter.to_wire for _, converter in fields]
    from_fns = [converter.from_wire for _, converter in fields]
    get_all = operator.attrgetter(*names)
    arity = len(fields) + (tag is not None)
    head: list[Any] = [] if tag is None else [tag]
    check_whole = _CROSS_FIELD_CHECKS.get(cls)
    label = cls.__name__

    def name_field(
        fns: list[Callable[[Any], Any]], values: Sequence[Any], error: _Invalid
    ) -> _Invalid:
        for name, fn, value in zip(names, fns, values, strict=True):
            try:
                fn(value)
            except _Invalid as inner:
                separator = "" if str(inner).startswith("[") else ": "
                return _Invalid(f"{label}.{name}{separator}{inner}")
        return _Invalid(f"{label}: {error}")

    def to_wire(value: Any) -> Any:
        if type(value) is not cls:
            raise _Invalid(f"expected a {label}, got {type(value).__name__}")
        values = get_all(value) if len(names) > 1 else (get_all(value),)
        try:
            wire = head + [fn(x) for fn, x in zip(to_fns, values, strict=True)]
        except _Invalid as error:
            raise name_field(to_fns, values, error) from None
        if check_whole is not None:
            check_whole(value)
        return wire

    def from_wire(value: Any) -> Any:
        if type(value) is not tuple or len(value) != arity:
            raise _Invalid(f"{label}: expected an array of {arity} items")
        values = value[1:] if tag is not None else value
        try:
            result = cls(*[fn(x) for fn, x in zip(from_fns, values, strict=True)])
        except _Invalid as error:
            raise name_field(from_fns, values, error) from None
        if check_whole is not None:
            check_whole(result)
        return result

    return _Converter(to_wire, from_wire)


def _check_hello(hello: Hello) -> None:
    if hello.min_version > hello.max_version:
        raise _Invalid(f"Hello: min_version {hello.min_version} > max_version {hello.max_version}")


_CROSS_FIELD_CHECKS: dict[type, Callable[[Any], None]] = {Hello: _check_hello}


# --- Building the schema ------------------------------------------------------------------


def _str_rule(owner: type, name: str) -> Callable[[Any], Any]:
    if name in _NODE_ID_FIELDS or name in ("view", "members"):
        return _check_node_id
    if name in _HOST_FIELDS:
        return _check_host
    if name == "addresses":
        return _check_address
    if name == "cluster_id":
        return _check_cluster_id
    raise TypeError(f"{owner.__name__}.{name}: a str field without a rule; add one to codec.py")


def _converter(owner: type, name: str, hint: Any, built: dict[type, _Converter]) -> _Converter:
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        arms = [arm for arm in typing.get_args(hint) if arm is not type(None)]
        if len(arms) != 1 or len(typing.get_args(hint)) != 2:
            raise TypeError(f"{owner.__name__}.{name}: only 'T | None' unions are supported")
        return _optional(_converter(owner, name, arms[0], built))
    if origin is tuple:
        item_hint, ellipsis = typing.get_args(hint)
        if ellipsis is not Ellipsis or name not in _TUPLE_LIMITS:
            raise TypeError(f"{owner.__name__}.{name}: a tuple field without a length limit")
        max_length, strictly_sorted = _TUPLE_LIMITS[name]
        return _tuple(_converter(owner, name, item_hint, built), max_length, strictly_sorted)
    if hint is bool:
        return _plain(_check_bool)
    if isinstance(hint, type) and issubclass(hint, IntEnum):
        return _enum(hint)
    if hint is int:
        return _plain(_check_uint(*_INT_RANGES.get((owner, name), (0, MAX_UINT))))
    if hint is str:
        check = _str_rule(owner, name)
        return _plain(check, _all_node_ids if check is _check_node_id else None)
    if hint is bytes:
        if (owner, name) not in _BYTES_LENGTHS:
            raise TypeError(f"{owner.__name__}.{name}: a bytes field without a length")
        return _plain(_check_bytes(_BYTES_LENGTHS[owner, name]))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if hint not in built:
            built[hint] = _build_dataclass(hint, None, built)
        return built[hint]
    raise TypeError(f"{owner.__name__}.{name}: the codec does not know type {hint!r}")


# --- The record fast path -----------------------------------------------------------------
#
# Records are most of what a node decodes (a Gossip carries up to a few hundred), and the
# generic converters above cost a Python call per field. This converter checks exactly the
# same rules in straight-line code and reuses what it has already checked: a string that
# passed its rule (node ids, hosts, address lists) and the Decision and Vote objects built
# from identical arrays (every record of a decided fleet carries the same decision). Any
# doubt falls back to the generic converter, which names the broken field.

_KNOWN_LIMIT = 8192
_known_ids: dict[str, None] = {}
_known_hosts: dict[str, None] = {}
_known_addresses: dict[tuple[Any, ...], None] = {}
_known_decisions: dict[tuple[Any, ...], Any] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any = None) -> None:
    if len(cache) >= _KNOWN_LIMIT:
        cache.clear()
    cache[key] = value


def _is_id(value: Any) -> bool:
    if type(value) is not str:
        return False
    if value in _known_ids:
        return True
    if NODE_ID_PATTERN.fullmatch(value) is None:
        return False
    _remember(_known_ids, value)
    return True


def _is_uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_UINT


def _fast_vote(raw: Any) -> Any:
    if (
        type(raw) is not tuple
        or len(raw) != 3
        or not _is_id(raw[0])
        or not _is_uint(raw[1])
        or not _is_uint(raw[2])
    ):
        raise _Invalid("vote")
    return _VOTE_TYPE(*raw)


def _fast_decision(raw: Any) -> Any:
    if type(raw) is not tuple:
        raise _Invalid("decision")
    try:
        known = _known_decisions.get(raw)
    except TypeError:  # an unhashable item (there are none in msgpack output; be safe)
        raise _Invalid("decision") from None
    if known is not None:
        return known
    decision = _DECISION_FROM_WIRE(raw)  # generic: decisions are few, and then remembered
    _remember(_known_decisions, raw, decision)
    return decision


def _fast_record(raw: Any) -> Any:
    if type(raw) is not tuple or len(raw) != _RECORD_FIELD_COUNT:
        raise _Invalid("record")
    (
        node_id,
        incarnation,
        boot_id,
        heartbeat,
        role,
        addresses,
        api_host,
        digest,
        view_size,
        vote,
        released,
        decision,
        progress,
    ) = raw
    if not (
        _is_id(node_id)
        and _is_uint(incarnation)
        and _is_uint(boot_id)
        and _is_uint(heartbeat)
        and type(digest) is bytes
        and len(digest) == VIEW_DIGEST_SIZE
        and type(view_size) is int
        and 0 <= view_size <= MAX_VIEW
        and type(released) is tuple
        and len(released) <= MAX_RELEASED
    ):
        raise _Invalid("record")
    role_member = _ROLES.get(role) if type(role) is int else None
    progress_member = _PROGRESSES.get(progress) if type(progress) is int else None
    if role_member is None or progress_member is None:
        raise _Invalid("record")
    if type(addresses) is not tuple or addresses not in _known_addresses:
        if (
            type(addresses) is not tuple
            or len(addresses) > MAX_ADDRESSES
            or not all(type(a) is str and len(a) <= MAX_ADDRESS_LENGTH for a in addresses)
            or not all(map(_is_address, addresses))
        ):
            raise _Invalid("record")
        _remember(_known_addresses, addresses)
    if api_host not in _known_hosts:
        if type(api_host) is not str or not _check_host_ok(api_host):
            raise _Invalid("record")
        _remember(_known_hosts, api_host)
    record = _RECORD_TYPE(
        node_id,
        incarnation,
        boot_id,
        heartbeat,
        role_member,
        addresses,
        api_host,
        digest,
        view_size,
        None if vote is None else _fast_vote(vote),
        tuple(map(_fast_vote, released)) if released else (),
        None if decision is None else _fast_decision(decision),
        progress_member,
    )
    _cache_record(record, raw)
    return record


_RECORD_TYPE = NodeRecord
_VOTE_TYPE = Vote
_RECORD_FIELD_COUNT = len(dataclasses.fields(NodeRecord))
_ROLES = {int(member): member for member in Role}
_PROGRESSES = {int(member): member for member in Progress}


def _check_host_ok(value: str) -> bool:
    return len(value) <= MAX_HOST_LENGTH and _HOST_RE.fullmatch(value) is not None


def _with_fast_path(
    fast: Callable[[Any], Any], generic: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    def from_wire(value: Any) -> Any:
        try:
            return fast(value)
        except _Invalid:
            return generic(value)  # raises, naming the field (or accepts: same rules)

    return from_wire


def _build_dataclass(cls: type, tag: int | None, built: dict[type, _Converter]) -> _Converter:
    hints = typing.get_type_hints(cls)
    fields = [
        (field.name, _converter(cls, field.name, hints[field.name], built))
        for field in dataclasses.fields(cls)
    ]
    converter = _dataclass(cls, fields, tag)
    if cls is NodeRecord:
        _GENERIC_RECORD.append(converter)
        converter = converter._replace(from_wire=_with_fast_path(_fast_record, converter.from_wire))
    return converter


_GENERIC_RECORD: list[_Converter] = []
"""The generic record converter, which the fast path must agree with (tests compare)."""


def _build_schema() -> tuple[
    dict[type, _Converter], dict[int, _Converter], dict[type, _Converter], int
]:
    built: dict[type, _Converter] = {}
    by_type: dict[type, _Converter] = {}
    by_tag: dict[int, _Converter] = {}
    widest = 0
    for tag, cls in MESSAGE_TYPES.items():
        converter = _build_dataclass(cls, int(tag), built)
        by_type[cls] = by_tag[int(tag)] = converter
    for cls in [*MESSAGE_TYPES.values(), *built]:
        widest = max(widest, len(dataclasses.fields(cls)) + 1)
    return by_type, by_tag, built, widest


_BY_TYPE, _BY_TAG, _NESTED, _WIDEST_DATACLASS = _build_schema()
_RECORD = _NESTED[NodeRecord]
_DECISION_FROM_WIRE = _NESTED[Decision].from_wire

# msgpack's own limits, derived from the schema so they stay as tight as the rules above:
# a declared length beyond them is refused before anything is allocated.
_UNPACK_LIMITS = {
    "max_str_len": MAX_ADDRESS_LENGTH,
    "max_bin_len": NONCE_SIZE,
    "max_array_len": max(_WIDEST_DATACLASS, *(limit for limit, _ in _TUPLE_LIMITS.values())),
    "max_map_len": 0,
    "max_ext_len": 0,
}


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError("extension types are not part of the protocol")


# --- Public API ---------------------------------------------------------------------------


RecordFilter = Callable[[str, int, int, "str | None"], bool]
"""``keep(node_id, incarnation, heartbeat, cluster_id)``: whether a relayed record of a
Gossip is worth converting (the receiver's freshness test; ``cluster_id`` is that of the
record's decision, or None). Only a cheap pre-filter: what it keeps is checked in full."""

_GOSSIP_TAG = int(Tag.GOSSIP)
_RECORD_FIELDS = [field.name for field in dataclasses.fields(NodeRecord)]
_RECORD_ARITY = len(_RECORD_FIELDS)
_ID_AT = _RECORD_FIELDS.index("node_id")
_INCARNATION_AT = _RECORD_FIELDS.index("incarnation")
_HEARTBEAT_AT = _RECORD_FIELDS.index("heartbeat")
_DECISION_AT = _RECORD_FIELDS.index("decision")

_RECORD_CACHE_SIZE = 8192
"""Encoded records remembered. A record is immutable and relayed many times (to several
targets per tick, by several ticks), so its bytes are made once while it is current."""
_record_cache: dict[int, tuple[NodeRecord, bytes | tuple[Any, ...]]] = {}


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x90 | length,))
    return b"\xdc" + length.to_bytes(2, "big")  # array16: MAX_RECORDS fits


def _record_bytes(record: NodeRecord) -> bytes:
    """msgpack of one (checked) record, from the cache while the object lives in it. The
    cache keeps the object itself, so an id is never mistaken for a newer object's."""
    key = id(record)
    hit = _record_cache.get(key)
    if hit is not None and hit[0] is record:
        known = hit[1]
        if type(known) is bytes:
            return known
        # The array it was decoded from: checked then, so it only needs packing.
        wire: Any = known
    else:
        wire = _RECORD.to_wire(record)
    data: bytes = msgpack.packb(wire, use_bin_type=True)
    _cache_record(record, data)
    return data


def _cache_record(record: NodeRecord, known: bytes | tuple[Any, ...]) -> None:
    """Remember a record's bytes, or the checked array it was decoded from (a node relays
    what it decodes: packing that array again is all its encoding needs)."""
    if len(_record_cache) >= _RECORD_CACHE_SIZE:
        del _record_cache[next(iter(_record_cache))]
    _record_cache[id(record)] = (record, known)


def _encode_gossip(message: Gossip) -> bytes | None:
    """A Gossip as the concatenation of its records' cached bytes; None when a rule is
    broken (``encode``'s general path then names it)."""
    records, want_reply = message.records, message.want_reply
    if type(records) is not tuple or len(records) > MAX_RECORDS or type(want_reply) is not bool:
        return None
    try:
        body = b"".join([_record_bytes(record) for record in records])
    except _Invalid:
        return None
    return b"".join(
        (
            b"\x93",  # [tag, records, want_reply]
            bytes((_GOSSIP_TAG,)),
            _array_header(len(records)),
            body,
            b"\xc3" if want_reply else b"\xc2",
        )
    )


def encode(message: Message) -> bytes:
    """The msgpack bytes of ``message``; ``LocalProtocolError`` if it breaks a rule."""
    data: bytes | None = None
    if type(message) is Gossip:
        data = _encode_gossip(message)
    if data is None:
        converter = _BY_TYPE.get(type(message))
        if converter is None:
            raise LocalProtocolError(f"not a message type: {type(message).__name__}")
        try:
            wire = converter.to_wire(message)
        except _Invalid as error:
            raise LocalProtocolError(f"cannot encode: {error}") from None
        data = msgpack.packb(wire, use_bin_type=True)
    if len(data) > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(
            f"{type(message).__name__} of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}; "
            "split it (see estimate_record_size)"
        )
    return data


def _cluster_id_of(raw_record: tuple[Any, ...]) -> str | None:
    decision = raw_record[_DECISION_AT]
    if type(decision) is tuple and decision and type(decision[0]) is str:
        return decision[0]
    return None


def _filter_records(wire: tuple[Any, ...], keep: RecordFilter) -> tuple[Any, ...]:
    """``wire`` (an unpacked Gossip) without the relayed records ``keep`` declines. The
    first record (the sender's own) always stays; anything malformed stays too, so the
    converters below reject it with the usual reason."""
    if len(wire) != 3 or type(wire[1]) is not tuple or len(wire[1]) < 2:
        return wire
    records = wire[1]
    kept = [records[0]]
    for raw in records[1:]:
        if (
            type(raw) is tuple
            and len(raw) == _RECORD_ARITY
            and type(raw[_ID_AT]) is str
            and type(raw[_INCARNATION_AT]) is int
            and type(raw[_HEARTBEAT_AT]) is int
            and not keep(raw[_ID_AT], raw[_INCARNATION_AT], raw[_HEARTBEAT_AT], _cluster_id_of(raw))
        ):
            continue
        kept.append(raw)
    if len(kept) == len(records):
        return wire
    return (wire[0], tuple(kept), wire[2])


def decode(data: bytes, keep: RecordFilter | None = None) -> Message:
    """The message in ``data``; ``RemoteProtocolError`` for anything else.

    ``keep``: for a Gossip, skip (unconverted, unchecked) the relayed records it declines.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        wire = msgpack.unpackb(
            data,
            use_list=False,
            raw=False,
            strict_map_key=True,
            timestamp=0,
            ext_hook=_refuse_ext,
            **_UNPACK_LIMITS,
        )
    # msgpack documents that unpacking "may raise exceptions other than" its own, so every
    # failure inside it is the peer's malformed input.
    except Exception as error:
        raise RemoteProtocolError(f"malformed msgpack: {type(error).__name__}") from None
    if type(wire) is not tuple or not wire:
        raise RemoteProtocolError("a message is a non-empty array")
    tag = wire[0]
    converter = _BY_TAG.get(tag) if type(tag) is int else None
    if converter is None:
        shown = tag if type(tag) is int else f"of type {type(tag).__name__}"
        raise RemoteProtocolError(f"unknown message tag {shown}")
    if keep is not None and tag == _GOSSIP_TAG:
        wire = _filter_records(wire, keep)
    try:
        message: Message = converter.from_wire(wire)
    except _Invalid as error:
        raise RemoteProtocolError(f"invalid message: {error}") from None
    return message


def wire_problem(value: Vote | Decision) -> str | None:
    """Why ``encode`` would refuse ``value`` inside a message, or None. For values read
    from elsewhere than the wire (the data dir's ``gossip.json``), so they are held to
    the same rules before anything carries them."""
    try:
        _NESTED[type(value)].to_wire(value)
    except (_Invalid, KeyError) as error:
        return str(error) if isinstance(error, _Invalid) else "not a Vote or a Decision"
    return None
