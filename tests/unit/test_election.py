"""The election state machine alone: each rule of PROTOCOL.md section 3 as effects."""

from __future__ import annotations

import dataclasses
import random

import pytest

from rancherd.gossip.config import GossipConfig
from rancherd.gossip.election import (
    MAX_ROUND_TIMEOUT_GROWTH,
    Decided,
    Effect,
    Election,
    JoinRole,
    Phase,
    Split,
    Store,
    Transmit,
    election_message_problem,
)
from rancherd.gossip.messages import (
    Ack,
    Commit,
    Decision,
    NodeId,
    Propose,
    Refuse,
    RefuseReason,
    Release,
    Vote,
)

A, B, C, D = (f"{i:032x}" for i in (1, 2, 3, 4))
V = (A, B, C)
CONFIG = dataclasses.replace(GossipConfig.lan(), startup_grace=0.0)
DECISION = Decision("c0ffee", A, "10.0.0.1", 0, V)


def election(
    node_id: NodeId = A,
    *,
    server: bool = True,
    vote: Vote | None = None,
    next_round: int = 0,
    released: tuple[Vote, ...] = (),
    decision: Decision | None = None,
    config: GossipConfig = CONFIG,
) -> Election:
    return Election(
        config, node_id, server, "10.0.0.1", vote, next_round, released, decision, now=0.0
    )


def sent(effects: list[Effect]) -> list[tuple[NodeId, object]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Transmit)]


def kinds(effects: list[Effect]) -> list[str]:
    return [
        type(e).__name__ if not isinstance(e, Transmit) else type(e.message).__name__
        for e in effects
    ]


def start_round(rng: random.Random | None = None) -> tuple[Election, Vote]:
    proposer = election(A)
    effects = proposer.evaluate(V, 1.0, rng or random.Random(0))
    assert proposer.vote is not None
    assert kinds(effects) == ["Store", "Propose", "Propose"]
    return proposer, proposer.vote


# --- rule 1: propose


def test_the_minimum_of_an_agreed_view_persists_its_vote_then_proposes() -> None:
    proposer, vote = start_round()
    assert proposer.phase is Phase.PROPOSING
    assert vote == Vote(A, 0, vote.nonce)
    assert proposer.next_round == 1
    assert sent(proposer.evaluate(V, 1.0, random.Random(0))) == []  # not twice
    assert proposer.waiting_for() == (B, C)


@pytest.mark.parametrize(
    "setup",
    [
        "not_min",
        "no_agreement",
        "voted",
        "decided",
        "agent",
        "duplicate",
        "backoff",
        "grace",
    ],
)
def test_nobody_else_proposes(setup: str) -> None:
    node = election(A)
    agreement: tuple[NodeId, ...] | None = V
    if setup == "not_min":
        node = election(B)
    elif setup == "no_agreement":
        agreement = None
    elif setup == "voted":
        node = election(A, vote=Vote(B, 0, 1))
    elif setup == "decided":
        node = election(A, decision=DECISION)
    elif setup == "agent":
        node = election(A, server=False)
    elif setup == "duplicate":
        node.duplicate = True
    elif setup == "backoff":
        node.backoff_until = 5.0
    elif setup == "grace":
        node = election(A, config=dataclasses.replace(CONFIG, startup_grace=3.0))
    assert node.evaluate(agreement, 1.0, random.Random(0)) == []
    assert node.vote == (Vote(B, 0, 1) if setup == "voted" else None)


def test_a_single_server_fleet_commits_alone() -> None:
    node = election(A, config=dataclasses.replace(CONFIG, expected_servers=1))
    effects = node.evaluate((A,), 1.0, random.Random(0))
    assert kinds(effects) == ["Store", "Store", "Decided"]
    assert node.decision is not None
    assert effects[-1] == Decided(node.decision, JoinRole.CLUSTER_INIT)


# --- rule 2: vote


def propose(vote: Vote, view: tuple[NodeId, ...] = V) -> Propose:
    return Propose(vote.proposer, vote.round, vote.nonce, view)


def test_a_voter_persists_before_it_acks_and_acks_again_for_the_same_round() -> None:
    voter = election(B)
    vote = Vote(A, 0, 42)
    effects = voter.on_propose(propose(vote), 1.0, ())
    assert effects == [Store(vote, 0, (), None), Transmit(A, Ack(A, 0, 42, B))]
    assert voter.phase is Phase.VOTED
    assert voter.on_propose(propose(vote), 2.0, ()) == [Transmit(A, Ack(A, 0, 42, B))]


@pytest.mark.parametrize(
    ("voter", "message", "reason"),
    [
        (election(B, decision=DECISION), propose(Vote(A, 1, 1)), RefuseReason.DECIDED),
        (election(B, server=False), propose(Vote(A, 1, 1)), RefuseReason.NOT_A_MEMBER),
        (election(D), propose(Vote(A, 1, 1)), RefuseReason.NOT_A_MEMBER),
        (election(B), propose(Vote(A, 1, 1), (A, B)), RefuseReason.NOT_A_MEMBER),
        (election(B, vote=Vote(C, 0, 9)), propose(Vote(A, 1, 1)), RefuseReason.VOTED_OTHER),
        (election(B, vote=Vote(A, 0, 9)), propose(Vote(A, 1, 1)), RefuseReason.VOTED_OTHER),
        (election(B, vote=Vote(A, 1, 2)), propose(Vote(A, 1, 1)), RefuseReason.VOTED_OTHER),
    ],
)
def test_a_voter_refuses_and_says_why(
    voter: Election, message: Propose, reason: RefuseReason
) -> None:
    before = voter.durable()
    effects = voter.on_propose(message, 1.0, ())
    assert len(effects) == 1
    refuse = effects[0]
    assert isinstance(refuse, Transmit)
    assert isinstance(refuse.message, Refuse)
    assert refuse.to == A
    assert refuse.message.reason is reason
    assert refuse.message.vote == before.vote
    assert refuse.message.decision == before.decision
    assert voter.durable() == before


def test_a_voter_refuses_a_round_its_proposer_already_released() -> None:
    voter = election(B)
    stale = Vote(A, 0, 5)
    effects = voter.on_propose(propose(stale), 1.0, (stale,))
    assert kinds(effects) == ["Refuse"]
    voter.on_release(Release(A, 1, 6))  # a Release that arrives before its Propose
    assert kinds(voter.on_propose(propose(Vote(A, 1, 6)), 1.0, ())) == ["Refuse"]
    assert voter.vote is None


# --- rule 3: commit


def test_commit_needs_an_ack_from_every_member_for_the_current_round() -> None:
    proposer, vote = start_round()
    rng = random.Random(1)
    assert proposer.on_ack(Ack(A, vote.round, vote.nonce + 1, B), 1.1, rng) == []  # other nonce
    assert proposer.on_ack(Ack(A, vote.round + 1, vote.nonce, B), 1.1, rng) == []  # other round
    assert proposer.on_ack(Ack(A, vote.round, vote.nonce, D), 1.1, rng) == []  # not in V
    assert proposer.on_ack(Ack(A, vote.round, vote.nonce, B), 1.2, rng) == []
    assert proposer.on_ack(Ack(A, vote.round, vote.nonce, B), 1.2, rng) == []  # duplicate
    effects = proposer.on_ack(Ack(A, vote.round, vote.nonce, C), 1.3, rng)
    assert kinds(effects) == ["Store", "Commit", "Commit", "Decided"]
    decision = proposer.decision
    assert decision is not None
    assert (decision.init_node, decision.members, decision.round) == (A, V, 0)
    assert isinstance(effects[0], Store)
    assert effects[0].decision == decision
    assert effects[-1] == Decided(decision, JoinRole.CLUSTER_INIT)
    assert proposer.phase is Phase.DECIDED


# --- rule 4: abort


def test_a_refusal_aborts_persists_the_release_and_backs_off() -> None:
    proposer, vote = start_round()
    refuse = Refuse(A, vote.round, vote.nonce, B, RefuseReason.VOTED_OTHER, Vote(C, 0, 1), None)
    effects = proposer.on_refuse(refuse, 2.0, random.Random(0))
    assert kinds(effects) == ["Store", "Release", "Release"]
    assert effects[0] == Store(None, 1, (vote,), None)
    assert proposer.phase is Phase.BACKOFF
    assert proposer.backoff_until is not None
    assert 2.0 <= proposer.backoff_until < 2.0 + CONFIG.backoff_max
    assert proposer.last_abandoned is not None
    assert proposer.last_abandoned.peers == (B,)
    # Backing off: no proposal until it is over, then a fresh round with a new number.
    assert proposer.evaluate(V, 2.0, random.Random(0)) == []
    until = proposer.backoff_until
    assert proposer.on_timer(until, random.Random(0)) == []
    effects = proposer.evaluate(V, until, random.Random(0))
    assert kinds(effects)[0] == "Store"
    assert proposer.vote is not None
    assert proposer.vote.round == 1


def test_a_stale_refusal_changes_nothing() -> None:
    proposer, vote = start_round()
    refuse = Refuse(A, vote.round + 7, vote.nonce, B, RefuseReason.VOTED_OTHER, None, None)
    assert proposer.on_refuse(refuse, 2.0, random.Random(0)) == []
    assert proposer.phase is Phase.PROPOSING


def test_a_member_leaving_or_a_timeout_aborts_the_round() -> None:
    proposer, _ = start_round()
    assert proposer.on_member_lost(D, 2.0, random.Random(0)) == []
    assert kinds(proposer.on_member_lost(C, 2.0, random.Random(0)))[0] == "Store"
    assert proposer.phase is Phase.BACKOFF

    proposer, _ = start_round()
    assert proposer.deadline() == 1.0 + CONFIG.retransmit_interval
    retransmit = proposer.on_timer(1.0 + CONFIG.retransmit_interval, random.Random(0))
    assert kinds(retransmit) == ["Propose", "Propose"]
    effects = proposer.on_timer(1.0 + CONFIG.round_timeout, random.Random(0))
    assert kinds(effects) == ["Store", "Release", "Release"]
    assert proposer.last_abandoned is not None
    assert proposer.last_abandoned.reason == "timed out"
    assert proposer.last_abandoned.peers == (B, C)


def test_each_round_that_times_out_doubles_the_next_ones_timeout_up_to_a_cap() -> None:
    """Voters too starved to ack in time get a longer round each time, not the same one
    again; a refusal or a member leaving does not lengthen it (only slowness does)."""
    proposer = election(A)
    rng = random.Random(0)
    now, lengths = 1.0, list[float]()
    for _ in range(6):
        while proposer.phase is not Phase.PROPOSING:
            deadline = proposer.deadline()
            now = max(now, deadline if deadline is not None else now)
            proposer.on_timer(now, rng)
            proposer.evaluate(V, now, rng)
        assert proposer.round is not None
        started = proposer.round.started
        abandoned = proposer.last_abandoned
        while proposer.last_abandoned is abandoned:  # retransmits, then the timeout
            deadline = proposer.deadline()
            assert deadline is not None
            now = deadline
            proposer.on_timer(now, rng)
        assert proposer.last_abandoned is not None
        assert proposer.last_abandoned.reason == "timed out"
        lengths.append(now - started)
    growth = [min(2**i, MAX_ROUND_TIMEOUT_GROWTH) for i in range(6)]
    assert lengths == pytest.approx([CONFIG.round_timeout * g for g in growth])

    refused, vote = start_round()
    refusal = Refuse(A, vote.round, vote.nonce, B, RefuseReason.VOTED_OTHER, Vote(D, 0, 1), None)
    refused.on_refuse(refusal, 2.0, rng)
    assert refused.last_abandoned is not None
    assert refused.timed_out_rounds == 0


def test_hearing_of_a_decision_mid_round_releases_and_joins_in_one_persisted_state() -> None:
    proposer, vote = start_round()
    theirs = Decision("beef", D, "10.0.0.4", 3, (B, D))
    effects = proposer.on_decision(theirs, D, 2.0)
    assert kinds(effects) == ["Store", "Release", "Release", "Decided"]
    assert effects[0] == Store(None, 1, (vote,), theirs)
    assert effects[-1] == Decided(theirs, JoinRole.SERVER)


def test_refuse_decided_joins_that_decision() -> None:
    proposer, vote = start_round()
    refuse = Refuse(A, vote.round, vote.nonce, B, RefuseReason.DECIDED, None, DECISION)
    effects = proposer.on_refuse(refuse, 2.0, random.Random(0))
    assert proposer.decision == DECISION
    assert kinds(effects)[-1] == "Decided"


# --- rule 5: release


def test_a_vote_is_dropped_only_by_an_exact_release() -> None:
    vote = Vote(A, 3, 99)
    voter = election(B, vote=vote)
    for other in (Release(A, 3, 98), Release(A, 2, 99), Release(C, 3, 99)):
        assert voter.on_release(other) == []
    assert voter.on_released_list(A, (Vote(A, 3, 98),)) == []
    assert voter.on_released_list(C, (vote,)) == []  # only the proposer's record counts
    assert voter.vote == vote
    assert voter.on_release(Release(A, 3, 99)) == [Store(None, 0, (), None)]
    assert voter.phase is Phase.DISCOVERING


def test_a_released_round_listed_in_the_proposers_record_frees_the_vote() -> None:
    vote = Vote(A, 3, 99)
    voter = election(B, vote=vote)
    assert voter.on_released_list(A, (Vote(A, 1, 1), vote)) == [Store(None, 0, (), None)]


def test_a_proposer_releases_again_when_a_voter_still_holds_an_abandoned_round() -> None:
    old = Vote(A, 0, 7)
    proposer = election(A, next_round=1, released=(old,))
    effects = proposer.evaluate(V, 1.0, random.Random(0))
    current = proposer.vote
    assert current is not None
    refuse = Refuse(A, current.round, current.nonce, B, RefuseReason.VOTED_OTHER, old, None)
    effects = proposer.on_refuse(refuse, 1.1, random.Random(0))
    # It re-sends the lost Release and keeps its round: the next retransmit asks B again.
    assert effects == [Transmit(B, Release(A, 0, 7))]
    assert proposer.phase is Phase.PROPOSING
    assert proposer.on_peer_vote(B, old, 1.2) == []  # rate-limited
    assert proposer.on_peer_vote(B, old, 1.1 + CONFIG.retransmit_interval) == [
        Transmit(B, Release(A, 0, 7))
    ]
    assert proposer.on_peer_vote(B, current, 5.0) == []  # never the round in progress


# --- rules 6 to 8


def test_a_decided_node_never_proposes_votes_or_commits_and_reports_a_split() -> None:
    node = election(B, decision=DECISION)
    assert node.evaluate((B, C, D), 1.0, random.Random(0)) == []
    assert kinds(node.on_propose(propose(Vote(A, 1, 1)), 1.0, ())) == ["Refuse"]
    assert node.on_decision(DECISION, C, 1.0) == []
    other = dataclasses.replace(DECISION, cluster_id="d1ff")
    assert node.on_decision(other, C, 1.0) == [Split(other, C)]
    assert node.on_decision(other, D, 1.0) == []  # reported once
    assert node.decision == DECISION


def test_roles_of_a_decision() -> None:
    assert election(A).role_in(DECISION) is JoinRole.CLUSTER_INIT
    assert election(B).role_in(DECISION) is JoinRole.SERVER
    assert election(B, server=False).role_in(DECISION) is JoinRole.AGENT
    clone = Election(CONFIG, A, True, "10.0.0.99", None, 0, (), None, 0.0)
    assert clone.role_in(DECISION) is JoinRole.SERVER  # same id, other machine


def test_a_duplicate_id_stops_proposing_and_aborts_the_round() -> None:
    proposer, _ = start_round()
    effects = proposer.on_duplicate(2.0, random.Random(0))
    assert kinds(effects) == ["Store", "Release", "Release"]
    proposer.on_timer(100.0, random.Random(0))
    assert proposer.evaluate(V, 100.0, random.Random(0)) == []
    assert proposer.on_propose(propose(Vote(A, 5, 5)), 100.0, ()) == []  # a clone's round


# --- restarts


def test_a_restarted_proposer_resumes_its_round_on_the_next_agreement() -> None:
    vote = Vote(A, 4, 1234)
    proposer = election(A, vote=vote, next_round=5)
    assert proposer.phase is Phase.PROPOSING
    effects = proposer.evaluate(V, 1.0, random.Random(0))
    assert effects == [Transmit(B, propose(vote)), Transmit(C, propose(vote))]
    assert proposer.next_round == 5


def test_a_restarted_voter_keeps_its_vote_and_round_numbers_never_repeat() -> None:
    assert election(B, vote=Vote(A, 0, 1)).phase is Phase.VOTED
    node = election(A, next_round=0, released=(Vote(A, 6, 1),))
    assert node.next_round == 7


# --- input checks


@pytest.mark.parametrize(
    ("message", "sender"),
    [
        (Propose(A, 0, 0, V), B),
        (Propose(A, 0, 0, (B, C)), A),
        (Propose(A, 0, 0, (C, B, A)), A),
        (Propose(A, -1, 0, V), A),
        (Ack(A, 0, 0, C), B),
        (Refuse(A, 0, 0, C, RefuseReason.DECIDED, None, None), B),
        (Refuse(A, 0, 0, B, 9, None, None), B),  # type: ignore[arg-type]
        (Release(A, 0, 0), B),
        (Commit(Decision("XYZ", A, "h", 0, V)), B),
        (Commit(Decision("ab", D, "h", 0, V)), B),
    ],
)
def test_election_messages_that_must_be_ignored(message: object, sender: NodeId) -> None:
    assert election_message_problem(message, sender, ()) is not None  # type: ignore[arg-type]


def test_election_messages_from_their_sender_pass() -> None:
    assert election_message_problem(Propose(A, 0, 0, V), A, ()) is None
    assert election_message_problem(Ack(A, 0, 0, B), B, ()) is None
    assert election_message_problem(Release(A, 0, 0), A, ()) is None
    assert election_message_problem(Commit(DECISION), C, ()) is None
