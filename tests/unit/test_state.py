"""The data dir: round trips, refusal of damaged files, the daemon lock."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Decision, Vote
from rancherd.state import (
    DataDir,
    DataDirBusy,
    DoneStamp,
    StateError,
    decode_persisted,
    encode_persisted,
)

node_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
uints = st.integers(0, 2**64 - 1)
counters = st.integers(0, 2**64 - 2)  # the node adds one before sending: the wire's limit
votes = st.builds(Vote, node_ids, uints, uints)
decisions = st.builds(
    Decision,
    st.text("0123456789abcdef", min_size=1, max_size=32),
    node_ids,
    st.sampled_from(["10.0.0.1", "node-a.example", "fd00::1"]),
    uints,
    st.lists(node_ids, max_size=7).map(lambda ids: tuple(sorted(set(ids)))),
)
states = st.builds(
    PersistedState,
    counters,
    st.none() | votes,
    counters,
    st.lists(votes, max_size=70).map(tuple),
    st.none() | decisions,
)


@given(states)
def test_persisted_state_round_trips(state: PersistedState) -> None:
    assert decode_persisted(encode_persisted(state)) == state


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format=2), "format"),
        (lambda d: d.update(incarnation=-1), "incarnation"),
        (lambda d: d.update(vote={"proposer": "x", "round": 1, "nonce": 2}), "vote.proposer"),
        (lambda d: d.update(released="no"), "released"),
        (lambda d: d.update(decision={"cluster_id": "a"}), "decision"),
    ],
)
def test_damaged_state_is_refused_with_what_is_wrong(
    tmp_path: Path, mutate: object, message: str
) -> None:
    data_dir = DataDir(tmp_path)
    data_dir.save_gossip(PersistedState(incarnation=3, vote=Vote("a" * 32, 1, 2)))
    document = json.loads(data_dir.gossip_file.read_bytes())
    mutate(document)  # type: ignore[operator]
    data_dir.gossip_file.write_text(json.dumps(document))
    with pytest.raises(StateError, match=message) as error:
        data_dir.load_gossip()
    assert str(data_dir.gossip_file) in str(error.value)
    assert "rancherd reset" in str(error.value)


def test_truncated_state_file_is_refused(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    data_dir.save_gossip(PersistedState(incarnation=1))
    data_dir.gossip_file.write_bytes(data_dir.gossip_file.read_bytes()[:20])
    with pytest.raises(StateError, match="not JSON"):
        data_dir.load_gossip()


def test_writes_are_private_and_leave_no_temporary_files(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "d")
    data_dir.create()
    data_dir.save_gossip(PersistedState(incarnation=1))
    data_dir.save_gossip(PersistedState(incarnation=2))
    assert data_dir.load_gossip() == PersistedState(incarnation=2)
    assert stat.S_IMODE(os.stat(data_dir.gossip_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data_dir.path).st_mode) == 0o700
    assert sorted(p.name for p in data_dir.path.iterdir()) == ["gossip.json"]


def test_node_id_is_created_once_and_kept(tmp_path: Path) -> None:
    rng = random.Random(1)
    first = DataDir(tmp_path).node_id(rng.randbytes)
    assert DataDir(tmp_path).node_id(rng.randbytes) == first
    (tmp_path / "node-id").write_text("not-an-id\n")
    with pytest.raises(StateError, match="not a node id"):
        DataDir(tmp_path).node_id(rng.randbytes)


def test_second_daemon_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    first, second = DataDir(tmp_path), DataDir(tmp_path)
    first.lock()
    try:
        with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()


def test_done_stamp_round_trips_and_damage_is_named(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    assert data_dir.load_done() is None
    stamp = DoneStamp("server", "https://10.0.0.1:6443", "abc", "k3s", 1.5)
    data_dir.save_done(stamp)
    assert data_dir.load_done() == stamp
    for damage in (
        '{"role": 1}',
        '{"role": 1, "server_url": null, "cluster_id": null, "runtime": "k3s", "finished_at": 0}',
        "[1]",
        "{",
    ):
        data_dir.done_file.write_text(damage)
        with pytest.raises(StateError, match=r"done\.json: malformed"):
            data_dir.load_done()
