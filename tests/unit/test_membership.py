"""The peer table, the relay queue, the input checks and the size estimate, without a core."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import node_records

from rancherd.gossip import codec
from rancherd.gossip.codec import GOSSIP_ENVELOPE_BYTES, estimate_record_size
from rancherd.gossip.config import GossipConfig, backoff_delay, jittered, retransmit_limit
from rancherd.gossip.election import Election
from rancherd.gossip.membership import (
    Applied,
    PeerTable,
    is_fresher,
    record_problem,
)
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    VIEW_DIGEST_SIZE,
    Decision,
    Gossip,
    NodeId,
    NodeRecord,
    Progress,
    Role,
    Vote,
    view_digest,
)
from rancherd.gossip.queue import (
    CHANGED_AGENT,
    CHANGED_SERVER,
    REFRESHED,
    BroadcastQueue,
    record_priority,
)
from rancherd.kinds import Preset

ME = "0" * 31 + "5"
IDS = [f"{i:032x}" for i in (1, 3, 7, 9, 11)]


def agreement(peers: PeerTable, expected: int) -> tuple[NodeId, ...] | None:
    """The election's rule 0 applied to what ``peers`` holds."""
    config = dataclasses.replace(GossipConfig(), expected_servers=expected)
    election = Election(config, peers.self_id, peers.self_is_server, "h", None, 0, (), None, 0.0)
    return election.agreement(peers.view, peers.disagreeing())


def record(
    node_id: NodeId,
    *,
    incarnation: int = 1,
    heartbeat: int = 1,
    role: Role = Role.SERVER,
    view: tuple[NodeId, ...] | None = None,
    address: str | None = None,
    released: tuple[Vote, ...] = (),
    decision: Decision | None = None,
    vote: Vote | None = None,
    progress: Progress = Progress.NONE,
) -> NodeRecord:
    """A record reporting ``view`` (by digest and size); by default a server's view is
    itself alone and an agent's is empty."""
    if view is None:
        view = (node_id,) if role is Role.SERVER else ()
    return NodeRecord(
        node_id=node_id,
        incarnation=incarnation,
        boot_id=7,
        heartbeat=heartbeat,
        role=role,
        addresses=(address or f"10.0.0.{int(node_id, 16) % 250}:8443",),
        api_host="10.0.0.1",
        view_digest=view_digest(view) if view else EMPTY_VIEW_DIGEST,
        view_size=len(view),
        vote=vote,
        released=released,
        decision=decision,
        progress=progress,
    )


def table(server: bool = True, cache: float = 10.0) -> PeerTable:
    return PeerTable(ME, server, cache, max_tombstones=4)


# --- freshness and expiry


def test_only_fresher_records_replace_what_is_held() -> None:
    peers = table()
    assert peers.apply(record(IDS[0], incarnation=2, heartbeat=5), now=0) is Applied.NEW
    assert peers.apply(record(IDS[0], incarnation=2, heartbeat=5), now=1) is Applied.STALE
    assert peers.apply(record(IDS[0], incarnation=1, heartbeat=99), now=1) is Applied.STALE
    assert peers.apply(record(IDS[0], incarnation=2, heartbeat=6), now=2) is Applied.FRESHER
    assert peers.apply(record(IDS[0], incarnation=3, heartbeat=0), now=3) is Applied.FRESHER
    entry = peers.get(IDS[0])
    assert entry is not None
    assert (entry.record.incarnation, entry.record.heartbeat, entry.last_grew) == (3, 0, 3)


def test_a_peer_expires_when_its_freshness_stops_growing() -> None:
    peers = table(cache=10.0)
    peers.apply(record(IDS[0], heartbeat=1), now=0)
    peers.apply(record(IDS[1], heartbeat=1), now=0)
    peers.apply(record(IDS[0], heartbeat=2), now=6)  # grew: its deadline moves to 16
    assert peers.expire(9.9) == []
    assert [r.node_id for r in peers.expire(10.0)] == [IDS[1]]
    assert peers.next_expiry() == 16.0
    assert [r.node_id for r in peers.expire(16.0)] == [IDS[0]]
    assert len(peers) == 0
    assert peers.next_expiry() is None


def test_a_stale_copy_does_not_resurrect_a_forgotten_peer() -> None:
    peers = table(cache=10.0)
    peers.apply(record(IDS[0], heartbeat=4), now=0)
    peers.expire(10.0)
    assert peers.apply(record(IDS[0], heartbeat=4), now=11) is Applied.STALE
    assert peers.apply(record(IDS[0], heartbeat=3), now=11) is Applied.STALE
    assert IDS[0] not in peers
    assert peers.apply(record(IDS[0], heartbeat=5), now=12) is Applied.NEW
    assert IDS[0] not in {tombstone.record.node_id for tombstone in peers.tombstones()}


def test_tombstones_are_bounded_oldest_first() -> None:
    peers = table(cache=1.0)
    for node_id in IDS:
        peers.apply(record(node_id), now=0)
    peers.expire(5.0)
    assert [t.record.node_id for t in peers.tombstones()] == sorted(IDS[1:])


# --- views and agreement


def test_view_holds_servers_only_and_self() -> None:
    peers = table()
    peers.apply(record(IDS[0]), now=0)
    peers.apply(record(IDS[1], role=Role.AGENT), now=0)
    peers.apply(record(IDS[2]), now=0)
    assert peers.view == (IDS[0], ME, IDS[2])
    assert peers.view_digest == view_digest(peers.view)
    assert peers.view_changed
    assert peers.servers == (IDS[0], IDS[2])


def test_the_tables_digest_follows_its_view() -> None:
    """The digest a record carries is that of the table's view, whatever moved it: a server
    joining, a server becoming an agent, a server expiring."""
    peers = table(cache=10.0)
    assert list(peers.view) == [ME]  # (a tuple compare would narrow the property's type)
    assert peers.view_digest == view_digest((ME,))
    seen = {peers.view_digest}
    peers.apply(record(IDS[0]), now=0)
    peers.apply(record(IDS[2]), now=5)
    assert peers.view_digest == view_digest((IDS[0], ME, IDS[2]))
    seen.add(peers.view_digest)
    peers.apply(record(IDS[2], incarnation=2, role=Role.AGENT), now=6)
    assert list(peers.view) == [IDS[0], ME]
    assert peers.view_digest == view_digest((IDS[0], ME))
    seen.add(peers.view_digest)
    peers.expire(10.0)
    assert list(peers.view) == [ME]
    assert peers.view_digest == view_digest((ME,))
    assert len(seen) == 3  # three views, three digests


def test_an_agent_table_carries_the_empty_digest() -> None:
    peers = table(server=False)
    peers.apply(record(IDS[0]), now=0)
    assert peers.view_digest == EMPTY_VIEW_DIGEST == view_digest(())


def test_agreement_needs_n_members_reporting_exactly_the_view() -> None:
    peers = table()
    view = tuple(sorted([ME, IDS[0], IDS[1]]))
    peers.apply(record(IDS[0], view=view), now=0)
    peers.apply(record(IDS[1], view=view[:2]), now=0)
    assert agreement(peers, 3) is None
    assert peers.disagreeing() == (IDS[1],)
    peers.apply(record(IDS[1], heartbeat=2, view=view), now=1)
    assert agreement(peers, 3) == view
    assert peers.disagreeing() == ()
    assert agreement(peers, 4) is None  # fewer than N servers
    peers.apply(record(IDS[2], view=view), now=2)  # a fourth server: the view grows
    assert agreement(peers, 3) is None
    assert peers.disagreeing() == (IDS[0], IDS[1], IDS[2])


def test_agreement_compares_digests_not_sizes() -> None:
    """A member whose view has the right size but other members disagrees; one that
    reports the digest of the same view agrees, whatever else its record says."""
    peers = table()
    view = tuple(sorted([ME, IDS[0], IDS[1]]))
    other = tuple(sorted([ME, IDS[0], IDS[2]]))
    peers.apply(record(IDS[0], view=view), now=0)
    peers.apply(record(IDS[1], view=other), now=0)
    assert peers.view == view
    assert agreement(peers, 3) is None
    assert peers.disagreeing() == (IDS[1],)
    same_size_wrong_digest = dataclasses.replace(
        record(IDS[1], heartbeat=2, view=view), view_digest=view_digest(other)
    )
    peers.apply(same_size_wrong_digest, now=1)
    assert agreement(peers, 3) is None
    assert peers.disagreeing() == (IDS[1],)
    peers.apply(record(IDS[1], heartbeat=3, view=view, vote=Vote(IDS[1], 1, 1)), now=2)
    assert agreement(peers, 3) == view
    assert peers.disagreeing() == ()


def test_a_view_change_of_a_member_marks_servers_changed() -> None:
    peers = table()
    peers.apply(record(IDS[0]), now=0)
    peers.servers_changed = False
    peers.apply(record(IDS[0], heartbeat=2), now=1)  # same view: a refresh
    assert not peers.servers_changed
    peers.apply(record(IDS[0], heartbeat=3, view=(IDS[0], ME)), now=2)
    assert peers.servers_changed


def test_an_agent_table_has_no_view_and_no_agreement() -> None:
    peers = table(server=False)
    peers.apply(record(IDS[0], view=(IDS[0],)), now=0)
    assert peers.view == ()
    assert agreement(peers, 1) is None
    assert peers.servers == (IDS[0],)


def test_a_role_change_moves_a_peer_in_or_out_of_the_view() -> None:
    peers = table()
    peers.apply(record(IDS[0]), now=0)
    peers.apply(record(IDS[0], incarnation=2, role=Role.AGENT), now=1)
    assert peers.view == (ME,)


def test_addresses_name_their_owner_until_it_is_forgotten() -> None:
    peers = table(cache=1.0)
    peers.apply(record(IDS[0], address="10.9.9.9:1"), now=0)
    assert peers.node_at("10.9.9.9:1") == IDS[0]
    peers.apply(record(IDS[0], heartbeat=2, address="10.9.9.8:1"), now=0.5)
    assert peers.node_at("10.9.9.9:1") is None
    assert peers.node_at("10.9.9.8:1") == IDS[0]
    peers.expire(2.0)
    assert peers.node_at("10.9.9.8:1") is None
    assert peers.addresses_of(IDS[0]) == ("10.9.9.8:1",)  # from the tombstone


# --- what to send


def test_sample_is_seeded_and_distinct() -> None:
    peers = table()
    for node_id in IDS:
        peers.apply(record(node_id), now=0)
    first = peers.sample(3, random.Random(1))
    assert first == peers.sample(3, random.Random(1))
    assert len(set(first)) == 3
    assert sorted(peers.sample(10, random.Random(1))) == sorted(IDS)


def test_full_state_puts_servers_first_and_rotates_the_rest() -> None:
    peers = table()
    agents = [f"{i:032x}" for i in range(100, 110)]
    for node_id in agents:
        peers.apply(record(node_id, role=Role.AGENT), now=0)
    peers.apply(record(IDS[0]), now=0)
    own = record(ME)
    size = estimate_record_size(own)
    first = peers.full_state(own, size, max_records=5, byte_budget=60_000)
    assert [r.node_id for r in first[:2]] == [ME, IDS[0]]
    second = peers.full_state(own, size, max_records=5, byte_budget=60_000)
    assert {r.node_id for r in first[2:]}.isdisjoint(r.node_id for r in second[2:])
    tight = peers.full_state(own, size, max_records=50, byte_budget=3 * size)
    assert len(tight) == 2  # own record and one more fit in three records' bytes


def test_full_state_holds_every_server_beyond_max_records() -> None:
    """``max_records`` bounds the agents only: one full state names every server, so a
    server that receives it knows the whole view at once."""
    peers = table()
    servers = [f"{i:032x}" for i in range(200, 240)]
    agents = [f"{i:032x}" for i in range(300, 340)]
    for node_id in servers:
        peers.apply(record(node_id), now=0)
    for node_id in agents:
        peers.apply(record(node_id, role=Role.AGENT), now=0)
    own = record(ME)
    size = estimate_record_size(own)
    for max_records in (1, 5, 41, 50):
        state = peers.full_state(own, size, max_records=max_records, byte_budget=60_000)
        ids = [r.node_id for r in state]
        assert ids[0] == ME
        assert sorted(ids[1 : 1 + len(servers)]) == servers
        assert len(ids) == max(max_records, 1 + len(servers))  # agents fill up to the bound
        assert set(ids[1 + len(servers) :]) <= set(agents)
    skipped = peers.full_state(own, size, max_records=1, byte_budget=60_000, skip=servers[3])
    assert {r.node_id for r in skipped} == {ME, *servers} - {servers[3]}
    assert len(codec.encode(Gossip(state, False))) <= 60_000


def test_full_state_still_fits_the_codec_and_the_byte_budget() -> None:
    peers = table()
    servers = [f"{i:032x}" for i in range(1000, 1000 + codec.MAX_RECORDS + 10)]
    for node_id in servers:
        peers.apply(record(node_id), now=0)
    own = record(ME)
    size = estimate_record_size(own)
    state = peers.full_state(own, size, max_records=8, byte_budget=codec.MAX_MESSAGE_SIZE)
    assert len(state) <= codec.MAX_RECORDS
    assert len(codec.encode(Gossip(state, True))) <= codec.MAX_MESSAGE_SIZE
    budget = 10 * size
    small = peers.full_state(own, size, max_records=8, byte_budget=budget)
    assert 1 < len(small) < 10
    assert len(codec.encode(Gossip(small, True))) <= budget


def test_queue_relays_each_version_a_limited_number_of_times() -> None:
    queue = BroadcastQueue()
    queue.push(record(IDS[0]), CHANGED_SERVER)
    sent = [queue.take(5, 10_000, limit=3, skip=None) for _ in range(4)]
    assert [len(batch) for batch in sent] == [1, 1, 1, 0]
    assert len(queue) == 0


def test_queue_prefers_servers_then_fewest_transmits_then_newest() -> None:
    queue = BroadcastQueue()
    queue.push(record(IDS[0], role=Role.AGENT), CHANGED_AGENT)
    queue.push(record(IDS[1]), CHANGED_SERVER)
    queue.push(record(IDS[2]), CHANGED_SERVER)
    assert [r.node_id for r in queue.take(2, 10_000, 5, None)] == [IDS[2], IDS[1]]
    # Servers at one transmit still beat an agent at zero: servers are what elections need.
    assert [r.node_id for r in queue.take(3, 10_000, 5, None)] == [IDS[2], IDS[1], IDS[0]]
    queue.push(record(IDS[3], role=Role.AGENT), CHANGED_AGENT)
    assert [r.node_id for r in queue.take(2, 3_000, 2, None)] == [IDS[3], IDS[0]]


def test_queue_relays_refreshes_after_every_change() -> None:
    """A heartbeat-only refresh goes after every change, a changed agent's included, even
    with fewer transmits: refreshes of a hundred servers must not crowd out the one change
    an agreement waits for."""
    queue = BroadcastQueue()
    queue.push(record(IDS[0], role=Role.AGENT), CHANGED_AGENT)
    queue.push(record(IDS[1]), CHANGED_SERVER)
    queue.take(2, 10_000, 5, None)  # both at one transmit now
    queue.push(record(IDS[2], heartbeat=2), REFRESHED)
    queue.push(record(IDS[3], heartbeat=2), REFRESHED)
    assert [r.node_id for r in queue.take(3, 10_000, 5, None)] == [IDS[1], IDS[0], IDS[3]]
    # Within the refresh rank, fewest transmits first, as within the others.
    assert [r.node_id for r in queue.take(4, 10_000, 5, None)] == [IDS[1], IDS[0], IDS[2], IDS[3]]


def test_a_refresh_never_lowers_a_pending_changes_rank() -> None:
    """The newer copy carries the pending change too: it keeps the change's rank (and
    starts its transmits again), while a change raises a pending refresh's rank."""
    queue = BroadcastQueue()
    queue.push(record(IDS[0], view=(IDS[0], ME)), CHANGED_SERVER)
    queue.push(record(IDS[1], role=Role.AGENT), CHANGED_AGENT)
    queue.take(2, 10_000, 5, None)
    queue.push(record(IDS[0], heartbeat=2, view=(IDS[0], ME)), REFRESHED)
    queue.push(record(IDS[1], heartbeat=2, role=Role.AGENT), REFRESHED)
    queue.push(record(IDS[2], heartbeat=2), REFRESHED)
    assert [(r.node_id, r.heartbeat) for r in queue.take(3, 10_000, 5, None)] == [
        (IDS[0], 2),
        (IDS[1], 2),
        (IDS[2], 2),
    ]
    # Once more, with the changes on more transmits than the refresh: rank still wins.
    queue.push(record(IDS[2], heartbeat=3), REFRESHED)
    assert [r.node_id for r in queue.take(1, 10_000, 5, None)] == [IDS[0]]
    assert [r.node_id for r in queue.take(1, 10_000, 5, None)] == [IDS[0]]
    queue.push(record(IDS[2], heartbeat=4, view=(IDS[2], ME)), CHANGED_SERVER)
    assert [r.node_id for r in queue.take(1, 10_000, 5, None)] == [IDS[2]]


def test_record_priority_tells_a_refresh_from_a_change() -> None:
    old = record(IDS[0], view=(IDS[0], ME), vote=Vote(IDS[0], 1, 1))
    refresh = dataclasses.replace(old, heartbeat=old.heartbeat + 5)
    assert record_priority(refresh, old) == REFRESHED
    assert record_priority(old, None) == CHANGED_SERVER
    agent = record(IDS[1], role=Role.AGENT)
    assert record_priority(agent, None) == CHANGED_AGENT
    assert record_priority(dataclasses.replace(agent, heartbeat=9), agent) == REFRESHED
    changes: list[dict[str, Any]] = [
        {"incarnation": 2},
        {"view_digest": view_digest((IDS[0], IDS[1], ME)), "view_size": 3},
        {"view_digest": view_digest((IDS[0], IDS[2]))},  # same size, other members
        {"vote": None},
        {"vote": Vote(IDS[0], 2, 1)},
        {"released": (Vote(IDS[0], 1, 1),)},
        {"decision": Decision("ab", IDS[0], "10.0.0.1", 0, (IDS[0],))},
        {"progress": Progress.WAITING},
        {"addresses": ("10.9.9.9:1",)},
        {"role": Role.AGENT},
    ]
    for change in changes:
        changed = dataclasses.replace(refresh, **change)
        expected = CHANGED_SERVER if changed.role is Role.SERVER else CHANGED_AGENT
        assert record_priority(changed, old) == expected, change
    assert CHANGED_SERVER < CHANGED_AGENT < REFRESHED  # lower ranks are relayed first


def test_the_table_queues_refreshes_at_the_refresh_rank() -> None:
    """What the table pushes: a heartbeat-only copy of a server after another server's
    change; the change first, though it was applied first."""
    peers = table()
    peers.apply(record(IDS[0]), now=0)
    peers.apply(record(IDS[1]), now=0)
    peers.queue.take(5, 10_000, 1, None)  # both sent: the queue is empty
    assert len(peers.queue) == 0
    peers.apply(record(IDS[0], heartbeat=2, view=(IDS[0], IDS[1], ME)), now=1)
    peers.apply(record(IDS[1], heartbeat=2), now=1)
    assert [r.node_id for r in peers.queue.take(1, 10_000, 5, None)] == [IDS[0]]
    assert [r.node_id for r in peers.queue.take(1, 10_000, 5, None)] == [IDS[0]]
    assert [r.node_id for r in peers.queue.take(2, 10_000, 5, None)] == [IDS[0], IDS[1]]


@given(
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_is_fresher_is_the_pair_order(inc: int, hb: int, old_inc: int, old_hb: int) -> None:
    old = record(IDS[0], incarnation=old_inc, heartbeat=old_hb)
    assert is_fresher(inc, hb, old) == ((inc, hb) > (old_inc, old_hb))
    peers = table()
    peers.apply(old, now=0)
    applied = peers.apply(record(IDS[0], incarnation=inc, heartbeat=hb), now=1)
    assert (applied is Applied.FRESHER) == is_fresher(inc, hb, old)


def test_queue_replaces_a_superseded_version_and_honours_skip_and_budget() -> None:
    queue = BroadcastQueue()
    queue.push(record(IDS[0], heartbeat=1), CHANGED_SERVER)
    queue.take(1, 10_000, 5, None)
    queue.push(record(IDS[0], heartbeat=2), CHANGED_SERVER)
    assert [r.heartbeat for r in queue.take(5, 10_000, 5, None)] == [2]
    queue.push(record(IDS[1]), CHANGED_SERVER)
    assert queue.take(5, 10_000, 5, skip=IDS[1]) == [record(IDS[0], heartbeat=2)]
    size = estimate_record_size(record(IDS[1]))
    assert queue.take(5, size - 1, 5, None) == []
    assert [r.node_id for r in queue.take(5, size, 5, None)] == [IDS[1]]


def test_queue_compacts_superseded_items() -> None:
    queue = BroadcastQueue()
    for heartbeat in range(10_000):
        queue.push(record(IDS[0], heartbeat=heartbeat), heartbeat % 3)
    assert len(queue) == 1
    assert queue._stacked < 100
    assert [r.heartbeat for r in queue.take(5, 10_000, 5, None)] == [9999]


# --- checks and sizes


def test_record_problem_rejects_what_the_core_must_not_act_on() -> None:
    good = record(IDS[0], view=(IDS[0],))
    assert record_problem(good) is None
    assert record_problem(record(IDS[1], role=Role.AGENT)) is None
    bad = [
        dataclasses.replace(good, node_id="not-an-id"),
        dataclasses.replace(good, heartbeat=-1),
        dataclasses.replace(good, view_digest=b"short"),
        dataclasses.replace(good, view_digest=bytearray(good.view_digest)),  # type: ignore[arg-type]
        dataclasses.replace(good, view_digest=(IDS[0],)),  # type: ignore[arg-type]
        dataclasses.replace(good, view_size=0),  # a server whose view misses itself
        dataclasses.replace(good, view_size=codec.MAX_VIEW + 1),
        dataclasses.replace(good, view_size=True),
        dataclasses.replace(good, role=Role.AGENT),  # an agent with a view
        dataclasses.replace(good, released=(Vote(IDS[1], 0, 0),)),  # someone else's round
        dataclasses.replace(good, decision=Decision("ab", IDS[1], "h", 0, (IDS[0],))),
        dataclasses.replace(good, addresses=("",)),
        dataclasses.replace(good, api_host=""),
        dataclasses.replace(good, role=1),  # type: ignore[arg-type]
        "a string",
    ]
    for value in bad:
        assert record_problem(value) is not None, value


def test_record_problem_shortcuts_still_check_what_changed() -> None:
    """The shortcuts (fields equal to a previous good record's, decisions already found
    good) skip only what was checked before: a changed bad field is still caught."""
    good_decision = Decision("ab", IDS[0], "10.0.0.1", 0, (IDS[0],))
    previous = record(IDS[0], view=(IDS[0],), decision=good_decision)
    checked: dict[Decision, None] = {}
    assert record_problem(previous, checked=checked) is None
    assert good_decision in checked
    fresher = dataclasses.replace(previous, heartbeat=2)
    assert record_problem(fresher, checked=checked, previous=previous) is None
    bad = [
        dataclasses.replace(fresher, view_digest=b"short"),
        dataclasses.replace(fresher, view_size=0),
        dataclasses.replace(fresher, view_size=-1),
        dataclasses.replace(fresher, addresses=("",)),
        dataclasses.replace(fresher, api_host=""),
        dataclasses.replace(fresher, released=(Vote(IDS[1], 0, 0),)),
        dataclasses.replace(fresher, decision=Decision("ab", IDS[1], "h", 0, (IDS[0],))),
    ]
    for value in bad:
        assert record_problem(value, checked=checked, previous=previous) is not None, value


@given(node_records(max_view=7, max_released=8, max_addresses=4))
def test_size_estimate_is_never_below_the_encoded_size(value: NodeRecord) -> None:
    actual = len(codec.encode(Gossip((value,), False))) - len(codec.encode(Gossip((), False)))
    assert estimate_record_size(value) >= actual


@given(st.lists(node_records(max_view=7), min_size=1, max_size=40))
def test_a_gossip_within_the_estimate_always_encodes(records: list[NodeRecord]) -> None:
    budget = 2_000
    total = GOSSIP_ENVELOPE_BYTES
    chosen = []
    for value in records:
        size = estimate_record_size(value)
        if total + size > budget:
            break
        chosen.append(value)
        total += size
    assert len(codec.encode(Gossip(tuple(chosen), True))) <= budget


# --- configuration


def test_presets_are_valid_and_named() -> None:
    for name in Preset:
        assert isinstance(GossipConfig.preset(name), GossipConfig)
    assert GossipConfig.lan().gossip_interval < GossipConfig.sim().gossip_interval
    with pytest.raises(ValueError, match="unknown gossip preset"):
        GossipConfig.preset("wan")


@pytest.mark.parametrize(
    "changes",
    [
        {"expected_servers": 0},
        {"expected_servers": 129},
        {"gossip_interval": 0.0},
        {"fanout": 0},
        {"gossip_jitter": 1.0},
        {"max_released": 9},
        {"released_kept": 2},
        {"max_records_per_gossip": 1},
        {"partners": 1},  # fewer than the fanout
        {"gathering_push_pull_interval": 0.0},
        {"round_timeout": 0.1, "retransmit_interval": 0.5},
        {"server_cache_duration": -1.0},
    ],
)
def test_bad_configs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid GossipConfig"):
        dataclasses.replace(GossipConfig.lan(), **changes)


def test_scaling_formulas() -> None:
    # memberlist's formula: 4 x ceil(log10(n + 1)).
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 1000) == 16
    assert jittered(1.0, 0.25, 0.0) == 0.75
    assert jittered(1.0, 0.25, 0.5) == 1.0
    assert backoff_delay(2.0, 0.5) == 1.0


# --- the view digest


@given(st.lists(st.sets(st.sampled_from([*IDS, ME]), max_size=6), min_size=2, max_size=8))
def test_view_digest_is_a_fixed_size_function_of_the_view(views: list[set[NodeId]]) -> None:
    digests = {}
    for members in views:
        view = tuple(sorted(members))
        digest = view_digest(view)
        assert type(digest) is bytes
        assert len(digest) == VIEW_DIGEST_SIZE
        assert digest == view_digest(tuple(sorted(members)))  # a function of the view alone
        digests[view] = digest
    # Distinct views, distinct digests (a 64-bit collision among a handful would be news).
    assert len(set(digests.values())) == len(digests)


def test_view_digest_sees_every_member() -> None:
    base = (IDS[0], IDS[1], ME)
    assert view_digest(base) != view_digest(base[:2])
    assert view_digest(base) != view_digest((IDS[0], IDS[2], ME))
    assert view_digest(()) == EMPTY_VIEW_DIGEST
    assert view_digest((ME,)) != EMPTY_VIEW_DIGEST
