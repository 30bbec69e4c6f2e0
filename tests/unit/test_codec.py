"""The codec: round trips, every rule in both directions, and hostile bytes."""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    acks,
    commits,
    gossips,
    hellos,
    messages,
    node_records,
    proposes,
    refuses,
    releases,
)

from rancherd.gossip import codec
from rancherd.gossip.codec import (
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    MAX_CLUSTER_ID_LENGTH,
    MAX_MEMBERS,
    MAX_MESSAGE_SIZE,
    MAX_RECORDS,
    MAX_RELEASED,
    MAX_UINT,
    MAX_VIEW,
    decode,
    encode,
)
from rancherd.gossip.errors import LocalProtocolError, RemoteProtocolError
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    MESSAGE_TYPES,
    VIEW_DIGEST_SIZE,
    Ack,
    Commit,
    Decision,
    Gossip,
    Hello,
    Message,
    NodeRecord,
    Progress,
    Propose,
    Refuse,
    RefuseReason,
    Release,
    Role,
    Tag,
    Vote,
    is_node_id,
    view_digest,
)

A = "0" * 31 + "a"
B = "0" * 31 + "b"
C = "0" * 31 + "c"
VOTE = Vote(A, 3, 2**63)
DECISION = Decision("c1d2", A, "10.0.0.1", 3, (A, B, C))
RECORD = NodeRecord(
    node_id=A,
    incarnation=2,
    boot_id=MAX_UINT,
    heartbeat=17,
    role=Role.SERVER,
    addresses=("10.0.0.1:8443", "[fd00::1]:8443"),
    api_host="10.0.0.1",
    view_digest=view_digest((A, B, C)),
    view_size=3,
    vote=VOTE,
    released=(Vote(A, 1, 5), Vote(A, 2, 6)),
    decision=DECISION,
    progress=Progress.WAITING,
)
SMALL_RECORD = NodeRecord(
    A, 0, 0, 0, Role.AGENT, (), "h", EMPTY_VIEW_DIGEST, 0, None, (), None, Progress.NONE
)
EXAMPLES: list[Message] = [
    Hello(1, 1, A, 7, bytes(range(32))),
    Gossip((RECORD, dataclasses.replace(RECORD, node_id=B, vote=None, decision=None)), True),
    Propose(A, 3, 2**63, (A, B, C)),
    Ack(A, 3, 2**63, B),
    Refuse(A, 3, 9, B, RefuseReason.VOTED_OTHER, VOTE, None),
    Release(A, 3, 9),
    Commit(DECISION),
]

STRATEGIES: dict[type, Callable[[], st.SearchStrategy[Any]]] = {
    Hello: hellos,
    Gossip: gossips,
    Propose: proposes,
    Ack: acks,
    Refuse: refuses,
    Release: releases,
    Commit: commits,
}


def wire(message: Message) -> list[Any]:
    """The msgpack structure of a valid message, as lists, to edit by hand."""
    result: list[Any] = msgpack.unpackb(encode(message))
    return result


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def assert_safe(data: bytes) -> None:
    """Decoding ``data`` either fails as the peer's fault, briefly, or yields a message the
    rules accept (it re-encodes), so encode and decode can never drift apart."""
    try:
        decoded = decode(data)
    except RemoteProtocolError as error:
        failure = str(error)
    else:
        assert decode(encode(decoded)) == decoded
        return
    assert len(failure) < 300, "peer data is quoted in logs: keep it short"


def rejected(data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    return str(info.value)


# --- Round trips ----------------------------------------------------------------------


def test_every_message_type_has_an_example_and_a_strategy() -> None:
    assert {type(m) for m in EXAMPLES} == set(MESSAGE_TYPES.values()) == set(STRATEGIES)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_examples_round_trip(message: Message) -> None:
    data = encode(message)
    assert decode(data) == message
    assert wire(message)[0] == Tag[type(message).__name__.upper()]


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    message: Message = data.draw(STRATEGIES[cls]())
    assert message.__class__ is cls
    encoded = encode(message)
    assert decode(encoded) == message
    assert encode(decode(encoded)) == encoded


def test_wire_shape_is_the_documented_one() -> None:
    assert wire(Ack(A, 3, 4, B)) == [int(Tag.ACK), A, 3, 4, B]
    assert wire(Release(A, 0, MAX_UINT)) == [int(Tag.RELEASE), A, 0, MAX_UINT]
    assert wire(EXAMPLES[0])[5] == bytes(range(32))  # bin, not str
    record = wire(Gossip((RECORD,), False))[1][0]
    assert record[4] == int(Role.SERVER)
    assert record[7] == view_digest((A, B, C))  # bin, not str
    assert record[8] == 3
    assert record[9] == [A, 3, 2**63]  # nested dataclass as an array
    assert wire(Refuse(A, 3, 9, B, RefuseReason.DECIDED, None, DECISION))[6] is None


def test_limits_are_reachable() -> None:
    """A record at every limit at once still fits in a frame, and so do MAX_RECORDS records."""
    ids = tuple(f"{i:032x}" for i in range(MAX_VIEW))
    host = "h" * (MAX_ADDRESS_LENGTH - len(":65535"))
    biggest = dataclasses.replace(
        RECORD,
        addresses=tuple(f"{host[:-2]}{i:02d}:65535" for i in range(MAX_ADDRESSES)),
        api_host="a" * codec.MAX_HOST_LENGTH,
        view_digest=view_digest(ids),
        view_size=MAX_VIEW,
        released=(VOTE,) * MAX_RELEASED,
        decision=Decision("f" * MAX_CLUSTER_ID_LENGTH, A, "b" * 253, MAX_UINT, ids[:MAX_MEMBERS]),
    )
    message = Gossip((biggest,), True)
    assert decode(encode(message)) == message
    many = Gossip((SMALL_RECORD,) * MAX_RECORDS, False)
    assert decode(encode(many)) == many


# --- Decoding rejects, and only with RemoteProtocolError ------------------------------


def edit(message: Message, path: tuple[int, ...], value: Any) -> bytes:
    """The message's encoding with the item at ``path`` (indexes into nested arrays) replaced."""
    structure = wire(message)
    target = structure
    for index in path[:-1]:
        target = target[index]
    target[path[-1]] = value
    return pack(structure)


ACK = Ack(A, 3, 4, B)
GOSSIP = Gossip((RECORD,), True)
HELLO = EXAMPLES[0]
# (what, message, path, replacement): each must be rejected.
BAD_FIELDS: list[tuple[str, Message, tuple[int, ...], Any]] = [
    ("tag 0", ACK, (0,), 0),
    ("tag beyond the enum", ACK, (0,), 200),
    ("tag as bool", Release(A, 1, 2), (0,), True),
    ("tag as str", ACK, (0,), "4"),
    ("bool for int", ACK, (2,), True),
    ("int for bool", GOSSIP, (2,), 1),
    ("float for int", ACK, (2,), 3.0),
    ("negative int", ACK, (3,), -1),
    ("str for int", ACK, (2,), "3"),
    ("None for int", ACK, (2,), None),
    ("list for int", ACK, (2,), [3]),
    ("map for int", ACK, (2,), {}),
    ("bytes for str", ACK, (1,), A.encode()),
    ("str for bytes", HELLO, (5,), "x" * 32),
    ("short nonce", HELLO, (5,), b"x" * 31),
    ("long nonce", HELLO, (5,), b"x" * 33),
    ("version 0", HELLO, (1,), 0),
    ("version beyond 16 bits", HELLO, (2,), 2**16),
    ("min version above max", HELLO, (1,), 2),
    ("unknown role", GOSSIP, (1, 0, 4), 3),
    ("unknown progress", GOSSIP, (1, 0, 12), 5),
    ("unknown reason", Refuse(A, 1, 2, B, RefuseReason.DECIDED, None, None), (5,), 0),
    ("uppercase node id", ACK, (1,), A.upper()),
    ("short node id", ACK, (1,), A[:-1]),
    ("long node id", ACK, (4,), B + "0"),
    ("non-hex node id", ACK, (4,), "g" * 32),
    ("node id with newline", ACK, (4,), A[:-1] + "\n"),
    ("unsorted view", Propose(A, 1, 2, (A, B)), (4,), [B, A]),
    ("duplicate in view", Propose(A, 1, 2, (A, B)), (4,), [A, A]),
    ("bad id in view", Propose(A, 1, 2, (A, B)), (4, 1), "x"),
    ("unsorted members", Commit(DECISION), (1, 4), [B, A]),
    ("address without port", GOSSIP, (1, 0, 5, 0), "10.0.0.1"),
    ("port 0", GOSSIP, (1, 0, 5, 0), "10.0.0.1:0"),
    ("port 65536", GOSSIP, (1, 0, 5, 0), "10.0.0.1:65536"),
    ("port with leading zero", GOSSIP, (1, 0, 5, 0), "10.0.0.1:08443"),
    ("bare IPv6 address", GOSSIP, (1, 0, 5, 0), "fd00::1:8443"),
    ("address with a space", GOSSIP, (1, 0, 5, 0), "a b:1"),
    ("address with a slash", GOSSIP, (1, 0, 5, 0), "a/b:1"),
    ("address too long", GOSSIP, (1, 0, 5, 0), "a" * 250 + ":8443x"),
    ("host with newline", GOSSIP, (1, 0, 6), "10.0.0.1\nfoo: bar"),
    ("host with URL parts", Commit(DECISION), (1, 2), "evil@10.0.0.1/x"),
    ("empty host", GOSSIP, (1, 0, 6), ""),
    ("host too long", GOSSIP, (1, 0, 6), "a" * 254),
    ("empty cluster id", Commit(DECISION), (1, 0), ""),
    ("uppercase cluster id", Commit(DECISION), (1, 0), "ABCD"),
    ("cluster id too long", Commit(DECISION), (1, 0), "a" * 65),
    ("too many addresses", GOSSIP, (1, 0, 5), ["h:1"] * (MAX_ADDRESSES + 1)),
    ("too many released", GOSSIP, (1, 0, 10), [[A, 1, 1]] * (MAX_RELEASED + 1)),
    ("vote of wrong arity", GOSSIP, (1, 0, 9), [A, 1]),
    ("vote as a map", GOSSIP, (1, 0, 9), {"proposer": A}),
    ("short view digest", GOSSIP, (1, 0, 7), b"x" * (VIEW_DIGEST_SIZE - 1)),
    ("long view digest", GOSSIP, (1, 0, 7), b"x" * (VIEW_DIGEST_SIZE + 1)),
    ("str for view digest", GOSSIP, (1, 0, 7), "x" * VIEW_DIGEST_SIZE),
    ("view list for view digest", GOSSIP, (1, 0, 7), [A, B, C]),
    ("view size beyond MAX_VIEW", GOSSIP, (1, 0, 8), MAX_VIEW + 1),
    ("negative view size", GOSSIP, (1, 0, 8), -1),
    ("bool for view size", GOSSIP, (1, 0, 8), True),
    ("record of wrong arity", GOSSIP, (1, 0), [A]),
    ("record as None", GOSSIP, (1, 0), None),
    ("records as a map", GOSSIP, (1,), {}),
    ("None for a required decision", Commit(DECISION), (1,), None),
]


@pytest.mark.parametrize(
    ("message", "path", "value"), [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS]
)
def test_bad_field_is_rejected(message: Message, path: tuple[int, ...], value: Any) -> None:
    rejected(edit(message, path, value))


def test_errors_name_the_field() -> None:
    assert "Ack.round" in rejected(edit(ACK, (2,), True))
    reason = rejected(edit(GOSSIP, (1, 0, 10, 1), [A, 1, "x"]))
    assert "Gossip.records[0]" in reason
    assert "NodeRecord.released[1]" in reason
    reason = rejected(edit(GOSSIP, (1, 0, 7), b"x"))
    assert "Gossip.records[0]" in reason
    assert "NodeRecord.view_digest" in reason


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(pack([]), id="empty array"),
        pytest.param(pack(4), id="not an array"),
        pytest.param(pack({"tag": 4}), id="a map"),
        pytest.param(pack([4, A, 3, 4]), id="too few fields"),
        pytest.param(pack([4, A, 3, 4, B, 5]), id="too many fields"),
        pytest.param(pack([2, [], True]) + b"\x00", id="trailing byte"),
        pytest.param(encode(ACK) + encode(ACK), id="two messages"),
        pytest.param(encode(ACK)[:-1], id="truncated"),
        pytest.param(b"\xc1", id="never-used byte"),
        pytest.param(b"\x95\x04\xa2\xff\xfe\x03\x04\xa0", id="non-UTF-8 str"),
        pytest.param(pack(msgpack.ExtType(1, b"x")), id="extension type"),
        pytest.param(pack([4, msgpack.ExtType(5, b""), 3, 4, B]), id="empty extension"),
        pytest.param(pack([4, A, msgpack.Timestamp(1), 4, B]), id="timestamp"),
        pytest.param(b"\x91" * 5000, id="deep nesting"),
        pytest.param(pack([[A * 7] * 500, 1]), id="long tag"),
        pytest.param(pack([4, A, 3, 4, B]).replace(b"\x04", b"\xcb" + bytes(8), 1), id="float tag"),
    ],
)
def test_malformed_input_is_rejected(data: bytes) -> None:
    rejected(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32 of 4G items"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map32 of 4G pairs"),
        pytest.param(b"\xdb\xff\xff\xff\xff" + b"a" * 100, id="str32 of 4 GiB"),
        pytest.param(b"\xc6\xff\xff\xff\xff" + b"a" * 100, id="bin32 of 4 GiB"),
        pytest.param(b"\xc9\xff\xff\xff\xff\x01", id="ext32 of 4 GiB"),
        pytest.param(b"\x92\xdc\xff\xff\x00", id="nested array16 of 64K items"),
        pytest.param(b"\xdc\x02\x01" + b"\xc0" * 513, id="array of MAX_RECORDS + 1"),
        pytest.param(b"\x95\x04\xda\x01\x00" + b"a" * 256, id="str of 256"),
    ],
)
def test_declared_lengths_beyond_limits_allocate_nothing(data: bytes) -> None:
    tracemalloc.start()
    try:
        rejected(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_oversized_input_is_rejected_before_parsing() -> None:
    assert "exceeds" in rejected(b"\x00" * (MAX_MESSAGE_SIZE + 1))


def test_count_limits() -> None:
    ids = [f"{i:032x}" for i in range(MAX_VIEW + 1)]
    rejected(edit(Propose(A, 1, 2, (A,)), (4,), ids))
    rejected(edit(Commit(DECISION), (1, 4), ids))
    rejected(edit(GOSSIP, (1, 0, 8), MAX_VIEW + 1))
    assert decode(edit(GOSSIP, (1, 0, 8), MAX_VIEW))
    small = wire(Gossip((SMALL_RECORD,), False))[1][0]
    rejected(pack([int(Tag.GOSSIP), [small] * (MAX_RECORDS + 1), True]))
    assert decode(pack([int(Tag.GOSSIP), [small] * MAX_RECORDS, True]))


def test_ints_reach_exactly_u64() -> None:
    assert decode(edit(ACK, (2,), MAX_UINT)) == Ack(A, MAX_UINT, 4, B)
    rejected(edit(ACK, (2,), -(2**63)))


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_remote_errors(data: bytes) -> None:
    assert_safe(data)


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=16), st.just(0)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.integers(0, 255)),
)


def mutate(data: bytes, mutation: tuple[str, Any, int]) -> bytes:
    kind, where, what = mutation
    if kind == "extend":
        return bytes(data + where)
    if not data:
        return data
    position = where % len(data)
    if kind == "flip":
        return data[:position] + bytes([data[position] ^ (1 << what)]) + data[position + 1 :]
    if kind == "truncate":
        return data[:position]
    return data[:position] + bytes([what]) + data[position + 1 :]


@given(messages(), st.lists(MUTATIONS, min_size=1, max_size=4))
def test_mutated_messages_only_raise_remote_errors(message: Message, mutations: list[Any]) -> None:
    data = encode(message)
    for mutation in mutations:
        data = mutate(data, mutation)
    assert_safe(data)


@given(messages(), messages(), st.integers(0, 10**6), st.integers(0, 10**6))
def test_spliced_messages_only_raise_remote_errors(
    first: Message, second: Message, cut_first: int, cut_second: int
) -> None:
    a, b = encode(first), encode(second)
    assert_safe(a[: cut_first % (len(a) + 1)] + b[cut_second % (len(b) + 1) :])


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), MAX_UINT),
        st.floats(allow_nan=False),
        st.text(max_size=40),
        st.binary(max_size=40),
        st.just(A),
        st.just("10.0.0.1:1"),
    )


def _replace_anywhere(structure: Any, choice: int, value: Any) -> Any:
    """``structure`` with its ``choice``-th node (pre-order, modulo the count) replaced."""
    nodes: list[tuple[list[Any], int]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                nodes.append((node, index))
                walk(item)

    walk(structure)
    parent, index = nodes[choice % len(nodes)]
    parent[index] = value
    return structure


@given(
    messages(),
    st.integers(0, 10**6),
    st.recursive(_scalars(), lambda inner: st.lists(inner, max_size=4), max_leaves=8),
)
def test_wrong_types_anywhere_only_raise_remote_errors(
    message: Message, choice: int, value: Any
) -> None:
    assert_safe(pack(_replace_anywhere(wire(message), choice, value)))


@given(st.text(alphabet="0123456789abcdefABCDEFxyz \n", min_size=30, max_size=34))
@settings(max_examples=300)
def test_node_id_rule_is_is_node_id(candidate: str) -> None:
    data = edit(ACK, (1,), candidate)
    try:
        decode(data)
    except RemoteProtocolError:
        assert not is_node_id(candidate)
    else:
        assert is_node_id(candidate)


# --- Encoding refuses with LocalProtocolError -----------------------------------------


def gossip_of(**changes: Any) -> Gossip:
    """A Gossip of ``RECORD`` with ``changes`` (of any type: the encoder must refuse them)."""
    return Gossip((dataclasses.replace(RECORD, **changes),), True)


BAD_MESSAGES: list[tuple[str, Any]] = [
    ("not a message", RECORD),
    ("None", None),
    ("bytes", b"\x94"),
    ("an object", object()),
    ("bool for int", Ack(A, True, 4, B)),
    ("negative int", Ack(A, -1, 4, B)),
    ("int beyond u64", Ack(A, 2**64, 4, B)),
    ("int for bool", Gossip((RECORD,), 1)),  # type: ignore[arg-type]
    ("int for enum", Gossip((dataclasses.replace(RECORD, role=1),), True)),  # type: ignore[arg-type]
    ("bad node id", Ack(A.upper(), 3, 4, B)),
    ("unsorted view", Propose(A, 1, 2, (B, A))),
    ("view as list", Propose(A, 1, 2, [A, B])),  # type: ignore[arg-type]
    ("bad address", Gossip((dataclasses.replace(RECORD, addresses=("nope",)),), True)),
    ("short view digest", gossip_of(view_digest=b"x")),
    ("bytearray view digest", gossip_of(view_digest=bytearray(VIEW_DIGEST_SIZE))),
    ("view size beyond MAX_VIEW", gossip_of(view_size=MAX_VIEW + 1)),
    ("view list for digest", gossip_of(view_digest=(A, B))),
    ("short nonce", Hello(1, 1, A, 7, b"x")),
    ("bytearray nonce", Hello(1, 1, A, 7, bytearray(32))),  # type: ignore[arg-type]
    ("min version above max", Hello(2, 1, A, 7, bytes(32))),
    ("too many records", Gossip((RECORD,) * (MAX_RECORDS + 1), True)),
    ("too big for a frame", Gossip((RECORD,) * 200, True)),
    ("nested bad vote", Refuse(A, 1, 2, B, RefuseReason.VOTED_OTHER, Vote("x", 1, 1), None)),
    ("wrong nested type", Commit(VOTE)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("message", [c[1] for c in BAD_MESSAGES], ids=[c[0] for c in BAD_MESSAGES])
def test_encode_refuses_what_peers_would_reject(message: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(message)


def test_encode_error_names_the_field() -> None:
    with pytest.raises(LocalProtocolError, match=r"Propose\.view\[1\]"):
        encode(Propose(A, 1, 2, (B, A)))


# --- The schema guard -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Unruled:
    comment: str


@dataclasses.dataclass(frozen=True)
class _Unbounded:
    notes: tuple[int, ...]


@pytest.mark.parametrize("cls", [_Unruled, _Unbounded])
def test_a_field_without_a_limit_stops_the_import(cls: type) -> None:
    with pytest.raises(TypeError, match="without"):
        codec._build_dataclass(cls, None, {})


# --- The Gossip fast path: cached per-record bytes ------------------------------------


def generic_encoding(message: Gossip) -> bytes:
    """What the general converter path makes of ``message`` (no per-record cache)."""
    data: bytes = msgpack.packb(codec._BY_TYPE[Gossip].to_wire(message), use_bin_type=True)
    return data


@given(st.lists(node_records(max_view=7, max_addresses=3), max_size=40), st.booleans())
@settings(max_examples=100, deadline=None)
def test_gossip_fast_path_is_byte_identical_to_the_generic_path(
    records: list[NodeRecord], want_reply: bool
) -> None:
    """The concatenation of cached record bytes is exactly msgpack of the whole message
    (fixarray and array16 headers included), the first time, from the cache, and for equal
    records that are other objects."""
    message = Gossip(tuple(records), want_reply)
    expected = generic_encoding(message)
    assert encode(message) == expected
    assert encode(message) == expected  # every record from the cache now
    copies = Gossip(tuple(dataclasses.replace(r) for r in records), want_reply)
    assert encode(copies) == expected
    assert decode(expected) == message


def test_gossip_fast_path_survives_cache_eviction_and_changed_records() -> None:
    first = encode(Gossip((RECORD, SMALL_RECORD), True))
    for heartbeat in range(codec._RECORD_CACHE_SIZE + 100):  # evicts RECORD's bytes
        record = dataclasses.replace(SMALL_RECORD, heartbeat=heartbeat)
        message = Gossip((record,), False)
        if heartbeat % 1000 == 0:
            assert encode(message) == generic_encoding(message)
        else:
            encode(message)
    assert len(codec._record_cache) <= codec._RECORD_CACHE_SIZE
    assert encode(Gossip((RECORD, SMALL_RECORD), True)) == first
    newer = dataclasses.replace(RECORD, heartbeat=RECORD.heartbeat + 1)
    decoded = decode(encode(Gossip((newer,), True)))
    assert isinstance(decoded, Gossip)
    assert decoded.records == (newer,)


@pytest.mark.parametrize(
    "message",
    [c[1] for c in BAD_MESSAGES if isinstance(c[1], Gossip)],
    ids=[c[0] for c in BAD_MESSAGES if isinstance(c[1], Gossip)],
)
def test_gossip_fast_path_refuses_what_the_generic_path_refuses(message: Gossip) -> None:
    """A bad record (or count, or flag) falls back to the general path, which names it,
    and a good record cached before does not make a bad neighbour pass."""
    encode(Gossip((RECORD,), True))  # RECORD's bytes are cached
    with pytest.raises(LocalProtocolError) as fast:
        encode(message)
    if "exceeds" in str(fast.value):
        assert len(generic_encoding(message)) > MAX_MESSAGE_SIZE
    else:
        with pytest.raises(codec._Invalid) as generic:
            generic_encoding(message)
        assert str(generic.value) in str(fast.value)  # the general path's reason, named
    if isinstance(message.records, tuple) and len(message.records) <= MAX_RECORDS:
        mixed = Gossip((RECORD, *message.records), message.want_reply)
        with pytest.raises(LocalProtocolError):
            encode(mixed)


# --- decode(keep=...): the receiver's pre-filter of relayed records -------------------


def _cluster_of(record: NodeRecord) -> str | None:
    return record.decision.cluster_id if record.decision is not None else None


@given(
    st.lists(node_records(max_view=3), min_size=1, max_size=20),
    st.booleans(),
    st.sets(st.integers(0, 19)),
)
@settings(max_examples=100, deadline=None)
def test_decode_keep_drops_exactly_the_declined_relayed_records(
    records: list[NodeRecord], want_reply: bool, declined: set[int]
) -> None:
    message = Gossip(tuple(records), want_reply)
    data = encode(message)
    calls: list[tuple[str, int, int, str | None]] = []
    by_key: dict[tuple[str, int, int, str | None], list[int]] = {}
    for index, record in enumerate(records[1:], start=1):
        by_key.setdefault(
            (record.node_id, record.incarnation, record.heartbeat, _cluster_of(record)), []
        ).append(index)

    def keep(node_id: str, incarnation: int, heartbeat: int, cluster_id: str | None) -> bool:
        key = (node_id, incarnation, heartbeat, cluster_id)
        calls.append(key)
        return not any(i in declined for i in by_key[key])

    filtered = decode(data, keep=keep)
    assert isinstance(filtered, Gossip)
    assert filtered.want_reply == want_reply
    assert filtered.records[0] == records[0]  # the sender's own, never offered to keep
    expected = [
        r
        for i, r in enumerate(records[1:], start=1)
        if not any(
            j in declined for j in by_key[(r.node_id, r.incarnation, r.heartbeat, _cluster_of(r))]
        )
    ]
    assert list(filtered.records[1:]) == expected
    assert calls == [(r.node_id, r.incarnation, r.heartbeat, _cluster_of(r)) for r in records[1:]]
    assert decode(data, keep=lambda *_: True) == message
    assert decode(data, keep=lambda *_: False) == Gossip((records[0],), want_reply)


@pytest.mark.parametrize("message", [m for m in EXAMPLES if not isinstance(m, Gossip)])
def test_decode_keep_leaves_other_messages_alone(message: Message) -> None:
    def refuse(*_: object) -> bool:
        raise AssertionError("keep is only asked about a Gossip's relayed records")

    assert decode(encode(message), keep=refuse) == message


THREE = Gossip((RECORD, dataclasses.replace(RECORD, node_id=B), SMALL_RECORD), False)
# (what, path into the wire form of THREE, replacement): each must still be rejected
# when keep declines every relayed record it can read.
BAD_UNDER_FILTER: list[tuple[str, tuple[int, ...], Any]] = [
    ("first record of wrong arity", (1, 0), [A]),
    ("first record with a bad address", (1, 0, 5, 0), "nope"),
    ("relayed record of wrong arity", (1, 1), [B, 1, 2]),
    ("relayed record as None", (1, 2), None),
    ("relayed record with an int id", (1, 1, 0), 7),
    ("relayed record with a bool heartbeat", (1, 1, 3), True),
    ("relayed record with a str incarnation", (1, 2, 1), "1"),
    ("want_reply as int", (2,), 1),
    ("records as a map", (1,), {}),
]


@pytest.mark.parametrize(
    ("path", "value"), [c[1:] for c in BAD_UNDER_FILTER], ids=[c[0] for c in BAD_UNDER_FILTER]
)
def test_decode_keep_still_rejects_what_it_cannot_read(path: tuple[int, ...], value: Any) -> None:
    """The filter only drops relayed records it can read (an array of a record's arity,
    with str id and int counters); everything else is left to the converters, which reject
    it as they would without a filter."""
    data = edit(THREE, path, value)
    rejected(data)
    with pytest.raises(RemoteProtocolError):
        decode(data, keep=lambda *_: False)


def test_decode_keep_checks_in_full_what_it_keeps() -> None:
    data = edit(THREE, (1, 1, 5, 0), "nope")  # a relayed record with a bad address
    with pytest.raises(RemoteProtocolError, match=r"Gossip\.records\[1\]"):
        decode(data, keep=lambda *_: True)
    # Declined, the same record is dropped unconverted: the filter exists so that stale
    # copies cost nothing, and a dropped record reaches no one.
    assert decode(data, keep=lambda *_: False) == Gossip((RECORD,), False)


def test_decode_keep_is_offered_the_records_decision() -> None:
    offered: list[str | None] = []

    def keep(node_id: str, incarnation: int, heartbeat: int, cluster_id: str | None) -> bool:
        offered.append(cluster_id)
        return True

    decode(encode(THREE), keep=keep)
    assert offered == [DECISION.cluster_id, None]
