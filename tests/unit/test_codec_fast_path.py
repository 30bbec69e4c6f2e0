"""The record fast path of the codec decides exactly as the generic converters do.

The fast path (``codec._fast_record``) checks a record's rules in straight-line code and
reuses what it checked before; any record it refuses goes to the generic converter, which
names the broken field. These properties hold it to that: on any array, valid or mutated,
it either builds the very record the generic converter builds, or refuses it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from rancherd.gossip import codec
from rancherd.gossip.errors import RemoteProtocolError
from rancherd.gossip.messages import Gossip

ID = st.sampled_from([f"{i:032x}" for i in (1, 2, 3, 0xABC)])
UINT = st.one_of(st.integers(0, 5), st.just(codec.MAX_UINT))
BAD_SCALAR = st.sampled_from([-1, codec.MAX_UINT + 1, True, 1.5, None, "x", b"x", ()])


def _vote() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(ID, UINT, UINT)


def _decision() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.builds(
        lambda init, members, rnd: (
            "ab" * 16,
            init,
            "10.0.0.1",
            rnd,
            tuple(sorted({init, *members})),
        ),
        ID,
        st.lists(ID, max_size=3),
        UINT,
    )


VALID = st.tuples(
    ID,
    UINT,
    UINT,
    UINT,
    st.sampled_from([1, 2]),
    st.lists(
        st.sampled_from(["10.0.0.1:8443", "[fe80::1]:1", "host.example:65535"]), max_size=3
    ).map(tuple),
    st.sampled_from(["10.0.0.1", "node-1.example", "fe80::1"]),
    st.binary(min_size=8, max_size=8),
    st.integers(0, codec.MAX_VIEW),
    st.one_of(st.none(), _vote()),
    st.lists(_vote(), max_size=3).map(tuple),
    st.one_of(st.none(), _decision()),
    st.sampled_from([0, 1, 2, 3, 4]),
)

BAD_FIELD = {
    0: st.sampled_from(["0" * 31, "G" * 32, 5]),
    4: st.sampled_from([0, 9, True]),
    5: st.sampled_from([("nohost",), ("10.0.0.1:0",), ["10.0.0.1:1"], ("a:1",) * 17]),
    6: st.sampled_from(["has space", "", "x" * 254, 7]),
    7: st.binary(max_size=7) | st.binary(min_size=9, max_size=9),
    8: st.sampled_from([-1, codec.MAX_VIEW + 1, True]),
    9: st.sampled_from([(1, 2), ("0" * 32, -1, 0)]),
    10: st.sampled_from([(("0" * 32, 1, 1),) * 9, [("0" * 32, 1, 1)]]),
    11: st.sampled_from([("zz", "0" * 32, "h", 0, ("0" * 32,)), ("ab", "0" * 32, "h", 0, ())]),
    12: st.sampled_from([5, -1, None]),
}


def _outcome(convert: Any, raw: tuple[Any, ...]) -> object:
    try:
        return convert(raw)
    except codec._Invalid:
        return "refused"


@st.composite
def raw_records(draw: st.DrawFn) -> tuple[Any, ...]:
    raw = list(draw(VALID))
    for index in draw(st.sets(st.sampled_from(sorted(BAD_FIELD)), max_size=2)):
        raw[index] = draw(BAD_FIELD[index])
    for index in draw(st.sets(st.integers(1, 3), max_size=1)):
        raw[index] = draw(BAD_SCALAR)
    if draw(st.booleans()) and draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return tuple(raw)


@given(raw_records())
def test_fast_path_builds_what_the_generic_converter_builds(raw: tuple[Any, ...]) -> None:
    (generic,) = codec._GENERIC_RECORD
    expected = _outcome(generic.from_wire, raw)
    fast = _outcome(codec._fast_record, raw)
    if fast != "refused":
        assert fast == expected
    # Whatever the fast path refuses, decoding still gives the generic answer.
    assert _outcome(codec._RECORD.from_wire, raw) == expected


@given(st.lists(raw_records(), min_size=1, max_size=4))
def test_decode_of_a_gossip_is_the_same_with_and_without_the_fast_path(
    raws: list[tuple[Any, ...]],
) -> None:
    import msgpack

    try:
        data = msgpack.packb([2, raws, False], use_bin_type=True)
    except OverflowError:  # ints msgpack cannot carry never reach a decoder
        assume(False)
    (generic,) = codec._GENERIC_RECORD
    wire = msgpack.unpackb(data, use_list=False)[1]  # what a decoder sees: arrays as tuples
    try:
        expected: object = Gossip(tuple(generic.from_wire(raw) for raw in wire), False)
    except codec._Invalid:
        expected = "refused"
    try:
        got: object = codec.decode(data)
    except RemoteProtocolError:
        got = "refused"
    assert got == expected
