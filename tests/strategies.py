"""Hypothesis strategies for valid wire values: every message type and its parts.

Everything drawn here passes the codec's rules (``rancherd/gossip/codec.py``): 32-hex node
ids, ``host:port`` addresses, sorted unique views, ints in range. Sizes default to what a
real fleet looks like (views of a few servers) so tests stay fast; pass larger bounds, up to
the codec's limits, to explore more.

Every strategy that draws node ids takes ``ids``: pass ``st.sampled_from(my_ids)`` to make
records, votes and views talk about a fixed set of nodes.

    from strategies import gossips, messages, node_ids, node_records
"""

from __future__ import annotations

from hypothesis import strategies as st

from rancherd.gossip.codec import (
    MAX_ADDRESSES,
    MAX_CLUSTER_ID_LENGTH,
    MAX_RECORDS,
    MAX_RELEASED,
    MAX_UINT,
    MAX_VIEW,
    NONCE_SIZE,
)
from rancherd.gossip.messages import (
    MIN_PROTOCOL_VERSION,
    NODE_ID_LENGTH,
    PROTOCOL_VERSION,
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
    Vote,
    view_digest,
)

__all__ = [
    "acks",
    "addresses",
    "cluster_ids",
    "commits",
    "decisions",
    "gossips",
    "hellos",
    "hosts",
    "messages",
    "node_ids",
    "node_records",
    "proposes",
    "refuses",
    "releases",
    "sorted_ids",
    "u64",
    "view_digests",
    "votes",
]

HEX = "0123456789abcdef"


def u64() -> st.SearchStrategy[int]:
    """Counters, rounds, nonces, boot ids; shrinks towards 0 but reaches 2**64-1."""
    return st.one_of(st.integers(0, 2**16), st.integers(0, MAX_UINT))


def node_ids() -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=NODE_ID_LENGTH, max_size=NODE_ID_LENGTH)


def _or_any(ids: st.SearchStrategy[str] | None) -> st.SearchStrategy[str]:
    return node_ids() if ids is None else ids


def sorted_ids(
    ids: st.SearchStrategy[str] | None = None, *, min_size: int = 0, max_size: int = 7
) -> st.SearchStrategy[tuple[str, ...]]:
    """A view or member list: sorted, no duplicates."""
    assert max_size <= MAX_VIEW
    return st.lists(_or_any(ids), min_size=min_size, max_size=max_size, unique=True).map(
        lambda items: tuple(sorted(items))
    )


def view_digests(
    ids: st.SearchStrategy[str] | None = None, *, max_size: int = 7
) -> st.SearchStrategy[tuple[bytes, int]]:
    """A record's ``(view_digest, view_size)``: the digest of a drawn view (of at most
    ``max_size``, and at most 4, ids: the list only feeds a hash, and drawing dozens of ids
    per record makes generation slow) and its size, or arbitrary bytes and any size the
    codec accepts (it checks only length and range)."""
    return st.one_of(
        sorted_ids(ids, max_size=min(max_size, 4)).map(lambda view: (view_digest(view), len(view))),
        st.tuples(
            st.binary(min_size=VIEW_DIGEST_SIZE, max_size=VIEW_DIGEST_SIZE),
            st.integers(0, MAX_VIEW),
        ),
    )


def _dns_names() -> st.SearchStrategy[str]:
    label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
    return st.lists(label, min_size=1, max_size=4).map(".".join)


def hosts() -> st.SearchStrategy[str]:
    """What ``api_host`` / ``init_host`` hold: an IPv4 or bare IPv6 literal, or a DNS name."""
    return st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        _dns_names(),
        st.just("localhost"),
    )


def addresses() -> st.SearchStrategy[str]:
    """A gossip endpoint ``host:port``, IPv6 in brackets."""
    host = st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
        _dns_names(),
    )
    return st.builds(lambda h, p: f"{h}:{p}", host, st.integers(1, 65535))


def cluster_ids() -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=1, max_size=MAX_CLUSTER_ID_LENGTH)


def votes(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Vote]:
    return st.builds(Vote, _or_any(ids), u64(), u64())


def decisions(
    ids: st.SearchStrategy[str] | None = None, *, max_members: int = 7
) -> st.SearchStrategy[Decision]:
    ids = _or_any(ids)
    return st.builds(
        Decision,
        cluster_ids(),
        ids,
        hosts(),
        u64(),
        sorted_ids(ids, min_size=1, max_size=max_members),
    )


def node_records(
    ids: st.SearchStrategy[str] | None = None,
    *,
    node_id: st.SearchStrategy[str] | None = None,
    max_addresses: int = 3,
    max_view: int = 7,
    max_released: int = 3,
) -> st.SearchStrategy[NodeRecord]:
    """A record; ``node_id`` fixes whose record it is (default: any of ``ids``). Its
    ``view_size`` may break the role rule (a server's view counts itself, an agent has
    none): the codec does not check that, ``record_problem`` does."""
    assert max_addresses <= MAX_ADDRESSES
    assert max_released <= MAX_RELEASED
    ids = _or_any(ids)
    return st.builds(
        lambda node, incarnation, boot, heartbeat, role, addrs, host, view, *rest: NodeRecord(
            node, incarnation, boot, heartbeat, role, addrs, host, *view, *rest
        ),
        ids if node_id is None else node_id,
        u64(),
        u64(),
        u64(),
        st.sampled_from(Role),
        st.lists(addresses(), max_size=max_addresses).map(tuple),
        hosts(),
        view_digests(ids, max_size=max_view),
        st.none() | votes(ids),
        st.lists(votes(ids), max_size=max_released).map(tuple),
        st.none() | decisions(ids, max_members=max_view),
        st.sampled_from(Progress),
    )


def hellos(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Hello]:
    versions = st.lists(
        st.integers(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION + 3), min_size=2, max_size=2
    )
    return st.builds(
        lambda v, node_id, boot_id, nonce: Hello(min(v), max(v), node_id, boot_id, nonce),
        versions,
        _or_any(ids),
        u64(),
        st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE),
    )


def gossips(
    ids: st.SearchStrategy[str] | None = None, *, max_records: int = 5
) -> st.SearchStrategy[Gossip]:
    assert max_records <= MAX_RECORDS
    records = st.lists(node_records(ids), min_size=1, max_size=max_records).map(tuple)
    return st.builds(Gossip, records, st.booleans())


def proposes(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Propose]:
    ids = _or_any(ids)
    return st.builds(Propose, ids, u64(), u64(), sorted_ids(ids, min_size=1))


def acks(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Ack]:
    ids = _or_any(ids)
    return st.builds(Ack, ids, u64(), u64(), ids)


def refuses(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Refuse]:
    ids = _or_any(ids)
    return st.builds(
        Refuse,
        ids,
        u64(),
        u64(),
        ids,
        st.sampled_from(RefuseReason),
        st.none() | votes(ids),
        st.none() | decisions(ids),
    )


def releases(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Release]:
    return st.builds(Release, _or_any(ids), u64(), u64())


def commits(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Commit]:
    return st.builds(Commit, decisions(ids))


def messages(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Message]:
    """Any message of the protocol (Hello included)."""
    return st.one_of(
        hellos(ids),
        gossips(ids),
        proposes(ids),
        acks(ids),
        refuses(ids),
        releases(ids),
        commits(ids),
    )
