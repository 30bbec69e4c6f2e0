"""Sans-IO election: sticky votes, propose / ack / commit, release and backoff.

The rules of docs/PROTOCOL.md section 3, in one place:

    [DISCOVERING] --agreement on V, I am min(V), no vote, no decision--> [PROPOSING r]
    [PROPOSING r] --acks from every member of V--------------------------> [DECIDED]
    [PROPOSING r] --refuse / member left / round_timeout / duplicate id---> [BACKOFF]
    [BACKOFF]     --backoff over---------------------------------------> [DISCOVERING]
    [DISCOVERING] --Propose(p, r, n), no vote held-----------------------> [VOTED (p, r, n)]
    [VOTED]       --exact Release, or p's record lists (p, r, n) released-> [DISCOVERING]
    any           --hears of a decision (Commit, Refuse, any record)------> [DECIDED]

``Election`` holds the durable state (vote, next_round, released, decision) and the round
in progress. Every input returns a list of effects in the order they must happen: a
``Store`` (persist the durable state now) comes before every ``Transmit`` that depends on
it, and the core turns each ``Store`` into a ``Persist`` event whose generation holds back
everything queued after it. The election never reads a clock or the peer table: the core
passes ``now``, the seeded generator, the current agreement and what a proposer's record
says it released.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Container, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from rancherd.gossip.codec import MAX_VIEW
from rancherd.gossip.config import GossipConfig, backoff_delay
from rancherd.gossip.membership import (
    decision_problem,
    id_problem,
    ids_problem,
    is_uint,
    vote_problem,
)
from rancherd.gossip.messages import (
    Ack,
    Commit,
    Decision,
    NodeId,
    Progress,
    Propose,
    Refuse,
    RefuseReason,
    Release,
    Role,
    Vote,
)
from rancherd.kinds import JoinRole

__all__ = [
    "MAX_ROUND_TIMEOUT_GROWTH",
    "Abandoned",
    "Decided",
    "Effect",
    "Election",
    "JoinRole",
    "PeerProgress",
    "Phase",
    "Round",
    "Split",
    "Store",
    "Transmit",
    "election_message_problem",
    "init_ready",
    "is_other_machine",
    "join_turn",
]


class Phase(StrEnum):
    DISCOVERING = "discovering"
    PROPOSING = "proposing"
    VOTED = "voted"
    BACKOFF = "backoff"
    DECIDED = "decided"


ElectionMessage = Propose | Ack | Refuse | Release | Commit

_MAX_SPLITS_REPORTED = 16
"""Other clusters remembered and reported; one is already an operator's emergency."""
MAX_ROUND_TIMEOUT_GROWTH = 8
"""A round that times out doubles the next one's ``round_timeout``, up to this factor: the
local health score stretches timers only for a node that is itself late, while a round
that times out is usually waiting for a few voters starved of CPU, which a fresh round
(every ack collected again, each after an fsync) asks even more of."""


# --- Effects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Store:
    """Persist this durable state before anything that follows."""

    vote: Vote | None
    next_round: int
    released: tuple[Vote, ...]
    decision: Decision | None


@dataclass(frozen=True, slots=True)
class Transmit:
    to: NodeId
    message: ElectionMessage


@dataclass(frozen=True, slots=True)
class Decided:
    """This node learned (or made) its decision and acts on it in ``role``."""

    decision: Decision
    role: JoinRole


@dataclass(frozen=True, slots=True)
class Split:
    """A second decision with another cluster id; the node keeps its own."""

    theirs: Decision
    source: NodeId


Effect = Store | Transmit | Decided | Split


# --- State ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Round:
    """This node's own round in progress."""

    vote: Vote
    view: tuple[NodeId, ...] | None
    """The members asked; ``None`` for a round resumed after a restart that has not been
    sent again yet (the view is not persisted; the round resumes on the next agreement)."""
    acks: set[NodeId]
    """Members whose ack counted, this node included (membership tests only)."""
    started: float
    next_retransmit: float


@dataclass(frozen=True, slots=True)
class Abandoned:
    """Why the last own round was given up (for the status line)."""

    vote: Vote
    reason: str
    """``refused``, ``member left``, ``timed out``, ``duplicate id`` or ``decided``."""
    peers: tuple[NodeId, ...]
    """Who refused, who left, or who had not acked."""
    refusal: RefuseReason | None = None
    their_vote: Vote | None = None


class Election:
    """One node's side of the election. Agents only ever learn a decision."""

    def __init__(
        self,
        config: GossipConfig,
        node_id: NodeId,
        is_server: bool,
        api_host: str,
        vote: Vote | None,
        next_round: int,
        released: tuple[Vote, ...],
        decision: Decision | None,
        now: float,
    ) -> None:
        self._config = config
        self.node_id = node_id
        self.is_server = is_server
        self.api_host = api_host
        self.vote = vote
        self.released = released[-config.released_kept :]
        # Never reuse a round number, whatever the persisted state says.
        rounds = [vote.round for vote in self.released if vote.proposer == node_id]
        if vote is not None and vote.proposer == node_id:
            rounds.append(vote.round)
        self.next_round = max([next_round, *(r + 1 for r in rounds)])
        self.decision = decision
        self.round: Round | None = None
        self.backoff_until: float | None = None
        self.duplicate = False
        self.not_before = now + config.startup_grace
        self._in_grace = is_server and config.startup_grace > 0
        self.last_abandoned: Abandoned | None = None
        self.timed_out_rounds = 0
        """Rounds of this node that timed out (since it started): each doubles the next
        round's timeout, up to ``MAX_ROUND_TIMEOUT_GROWTH``."""
        self.slowness = 1.0
        """Multiplies ``round_timeout`` and ``retransmit_interval`` (``core.set_slowness``)."""
        self.splits: dict[str, tuple[Decision, NodeId]] = {}
        self._releases_heard: deque[Vote] = deque(maxlen=32)
        self._rereleased: dict[tuple[NodeId, Vote], float] = {}
        if decision is None and vote is not None and vote.proposer == node_id and is_server:
            # A proposer restarted inside its own round: resume it on the next agreement.
            # Committing it later is safe: every voter still holds exactly this vote.
            self.round = Round(vote, None, {node_id}, now, now)

    # --- queries

    @property
    def phase(self) -> Phase:
        if self.decision is not None:
            return Phase.DECIDED
        if self.round is not None:
            return Phase.PROPOSING
        if self.vote is not None:
            return Phase.VOTED
        if self.backoff_until is not None:
            return Phase.BACKOFF
        return Phase.DISCOVERING

    @property
    def in_grace(self) -> bool:
        """Still in its startup grace (a server that may not start a round yet)."""
        return self._in_grace

    def role_in(self, decision: Decision) -> JoinRole:
        if not self.is_server:
            return JoinRole.AGENT
        # The host check keeps a clone (same node id, other machine) from taking the init
        # role of a cluster its twin created.
        if decision.init_node == self.node_id and decision.init_host == self.api_host:
            return JoinRole.CLUSTER_INIT
        return JoinRole.SERVER

    def waiting_for(self) -> tuple[NodeId, ...]:
        if self.decision is not None:
            return ()
        if self.round is not None:
            view = self.round.view or ()
            return tuple(member for member in view if member not in self.round.acks)
        if self.vote is not None:
            return (self.vote.proposer,)
        return ()

    def deadline(self) -> float | None:
        """The next time ``on_timer`` has something to do."""
        deadline = self.backoff_until
        if self.decision is None:
            current = self.round
            if current is not None:
                timeout = current.started + self._round_timeout()
                if current.view is not None and current.next_retransmit < timeout:
                    timeout = current.next_retransmit
                if deadline is None or timeout < deadline:
                    deadline = timeout
            if self._in_grace and (deadline is None or self.not_before < deadline):
                deadline = self.not_before
        return deadline

    def record_released(self) -> tuple[Vote, ...]:
        """The newest abandoned rounds, as this node's record lists them."""
        return self.released[-self._config.max_released :]

    def durable(self) -> Store:
        return Store(self.vote, self.next_round, self.released, self.decision)

    def agreement(
        self, view: tuple[NodeId, ...], disagreeing: tuple[NodeId, ...]
    ) -> tuple[NodeId, ...] | None:
        """Rule 0: a server has agreement on its view ``V`` (sorted, itself included) when
        ``|V| >= N`` and no member's freshest record reports another view (``disagreeing``:
        the members whose record's view digest differs from ours)."""
        if not self.is_server or not self._enough(view) or disagreeing:
            return None
        return view

    # --- inputs

    def evaluate(
        self, agreement: tuple[NodeId, ...] | None, now: float, rng: random.Random
    ) -> list[Effect]:
        """Rule 1: propose when this server is the minimum of an agreed view."""
        if not self.is_server or self.decision is not None or self.duplicate:
            return []
        if agreement is None or agreement[0] != self.node_id:
            return []
        if self.round is not None:
            if self.round.view is None:
                return self._send_round(agreement, now, rng)
            return []
        if self.vote is not None or self.backoff_until is not None or now < self.not_before:
            return []
        vote = Vote(self.node_id, self.next_round, rng.getrandbits(64))
        self.vote = vote
        self.next_round += 1
        self.round = Round(vote, None, {self.node_id}, now, now)
        return [self.durable(), *self._send_round(agreement, now, rng)]

    def on_propose(
        self, message: Propose, now: float, proposer_released: Container[Vote]
    ) -> list[Effect]:
        """Rule 2. ``proposer_released``: the rounds the proposer's record lists released."""
        vote = Vote(message.proposer, message.round, message.nonce)
        if message.proposer == self.node_id:
            return []  # another machine with this node id (the core reports it)
        if self.decision is not None:
            return self._refuse(message, RefuseReason.DECIDED)
        if not self.is_server or self.node_id not in message.view or not self._enough(message.view):
            return self._refuse(message, RefuseReason.NOT_A_MEMBER)
        if self.vote is not None and self._same_vote(self.vote, vote):
            return [Transmit(vote.proposer, self._ack(vote))]
        if self._bound_elsewhere():
            return self._refuse(message, RefuseReason.VOTED_OTHER)
        if vote in proposer_released or vote in self._releases_heard:
            return self._refuse(message, RefuseReason.STALE_ROUND)
        return self._vote_for(vote)

    def on_ack(self, message: Ack, now: float, rng: random.Random) -> list[Effect]:
        """Rule 3: count an ack of the voter itself, for the current round, from V."""
        vote = Vote(message.proposer, message.round, message.nonce)
        current = self.round
        if self.decision is not None or current is None or not self._same_vote(current.vote, vote):
            return self._release_again(message.voter, vote, now)
        if current.view is None or message.voter not in current.view:
            return []
        current.acks.add(message.voter)
        return self._maybe_commit(rng)

    def on_refuse(self, message: Refuse, now: float, rng: random.Random) -> list[Effect]:
        """Rules 4 and 5: abandon the round; re-send a lost Release the refusal reveals."""
        if message.decision is not None:
            # Any node that hears of a decision joins it (aborting a round in progress).
            return self.on_decision(message.decision, message.voter, now)
        effects: list[Effect] = []
        if message.vote is not None:
            effects += self._release_again(message.voter, message.vote, now)
        current = self.round
        vote = Vote(message.proposer, message.round, message.nonce)
        if self.decision is not None or current is None or current.view is None:
            return effects
        if current.vote != vote or message.voter not in current.view:
            return effects
        if (
            message.reason is RefuseReason.VOTED_OTHER
            and message.vote is not None
            and message.vote in self.released
        ):
            # It holds one of our own abandoned rounds: the Release just re-sent frees it,
            # and the next retransmit asks it again. No need to give up this round.
            return effects
        abandoned = Abandoned(vote, "refused", (message.voter,), message.reason, message.vote)
        return effects + self._abandon(now, rng, abandoned)

    def on_release(self, message: Release) -> list[Effect]:
        """Rule 5: drop the vote on an exact release from its proposer."""
        vote = Vote(message.proposer, message.round, message.nonce)
        if vote not in self._releases_heard:
            self._releases_heard.append(vote)
        return self._drop_vote_if(vote)

    def on_released_list(self, proposer: NodeId, released: tuple[Vote, ...]) -> list[Effect]:
        """Rule 5: a record of ``proposer`` lists the rounds it abandoned."""
        vote = self.vote
        if vote is None or vote.proposer != proposer or vote not in released:
            return []
        return self._drop_vote_if(vote)

    def on_peer_vote(self, voter: NodeId, vote: Vote, now: float) -> list[Effect]:
        """A record shows ``voter`` holding ``vote``: release it again if it is ours, abandoned."""
        return self._release_again(voter, vote, now)

    def on_decision(self, decision: Decision, source: NodeId, now: float) -> list[Effect]:
        """Rules 6 and 7: join the first decision heard; report any other as a split."""
        ours = self.decision
        if ours is not None:
            cluster_id = decision.cluster_id
            if cluster_id == ours.cluster_id or cluster_id in self.splits:
                return []
            if len(self.splits) >= _MAX_SPLITS_REPORTED:
                return []
            self.splits[cluster_id] = (decision, source)
            return [Split(decision, source)]
        releases: list[Effect] = []
        current = self.round
        if current is not None:
            # Abandon our round first, in the same persisted state as the decision.
            releases = self._drop_round(current, Abandoned(current.vote, "decided", (source,)))
        self.decision = decision
        self.backoff_until = None
        return [self.durable(), *releases, Decided(decision, self.role_in(decision))]

    def on_member_lost(self, node_id: NodeId, now: float, rng: random.Random) -> list[Effect]:
        """Rule 4: a member of the round's view left the table."""
        current = self.round
        if self.decision is not None or current is None or current.view is None:
            return []
        if node_id == self.node_id or node_id not in current.view:
            return []
        return self._abandon(now, rng, Abandoned(current.vote, "member left", (node_id,)))

    def on_duplicate(self, now: float, rng: random.Random) -> list[Effect]:
        """Rule 8: another machine uses this node id; stop proposing."""
        self.duplicate = True
        current = self.round
        if self.decision is not None or current is None:
            return []
        return self._abandon(now, rng, Abandoned(current.vote, "duplicate id", ()))

    def on_timer(self, now: float, rng: random.Random) -> list[Effect]:
        effects: list[Effect] = []
        if self._in_grace and now >= self.not_before:
            self._in_grace = False
        if self.backoff_until is not None and now >= self.backoff_until:
            self.backoff_until = None
        current = self.round
        if self.decision is not None or current is None:
            return effects
        if now >= current.started + self._round_timeout():
            waiting = self.waiting_for()
            self.timed_out_rounds += 1
            return self._abandon(now, rng, Abandoned(current.vote, "timed out", waiting))
        if current.view is not None and now >= current.next_retransmit:
            propose = self._propose_message(current)
            for member in current.view:
                if member not in current.acks:
                    effects.append(Transmit(member, propose))
            current.next_retransmit = now + self._config.retransmit_interval * self.slowness
        return effects

    # --- single rules (each one line of the safety argument; the simulator's mutants,
    # sim/mutants.py, replace them one at a time to show that the simulator notices)

    def _enough(self, view: tuple[NodeId, ...]) -> bool:
        """Rule 0: a view is large enough to elect in."""
        return len(view) >= self._config.expected_servers

    def _same_vote(self, held: Vote, other: Vote) -> bool:
        """Two votes are the same round of the same proposer, nonce included."""
        return held == other

    def _bound_elsewhere(self) -> bool:
        """Rule 2: a vote is sticky; a node that holds one refuses every other round."""
        return self.vote is not None

    def _vote_for(self, vote: Vote) -> list[Effect]:
        """Rule 2: the vote is stored before the ack that announces it leaves."""
        self.vote = vote
        return [self.durable(), Transmit(vote.proposer, self._ack(vote))]

    def _has_all_acks(self, current: Round) -> bool:
        """Rule 3: a round commits on an ack of every member of its view, not a majority."""
        return all(member in current.acks for member in current.view or ())

    def _release_frees(self, held: Vote, released: Vote) -> bool:
        """Rule 5: a release frees exactly the round it names."""
        return held == released

    # --- internals

    def _round_timeout(self) -> float:
        doublings = min(self.timed_out_rounds, MAX_ROUND_TIMEOUT_GROWTH)  # keeps the shift small
        growth = min(1 << doublings, MAX_ROUND_TIMEOUT_GROWTH)
        return self._config.round_timeout * self.slowness * growth

    def _propose_message(self, current: Round) -> Propose:
        vote = current.vote
        return Propose(vote.proposer, vote.round, vote.nonce, current.view or ())

    def _send_round(self, view: tuple[NodeId, ...], now: float, rng: random.Random) -> list[Effect]:
        current = self.round
        assert current is not None
        current.view = view
        current.acks = {self.node_id}
        current.next_retransmit = now + self._config.retransmit_interval
        propose = self._propose_message(current)
        effects: list[Effect] = [
            Transmit(member, propose) for member in view if member != self.node_id
        ]
        return effects + self._maybe_commit(rng)

    def _maybe_commit(self, rng: random.Random) -> list[Effect]:
        current = self.round
        if current is None or current.view is None:
            return []
        if not self._has_all_acks(current):
            return []
        decision = Decision(
            cluster_id=f"{rng.getrandbits(128):032x}",
            init_node=self.node_id,
            init_host=self.api_host,
            round=current.vote.round,
            members=current.view,
        )
        self.decision = decision
        self.round = None
        self.backoff_until = None
        commit = Commit(decision)
        return [
            self.durable(),
            *(Transmit(m, commit) for m in current.view if m != self.node_id),
            Decided(decision, JoinRole.CLUSTER_INIT),
        ]

    def _abandon(self, now: float, rng: random.Random, abandoned: Abandoned) -> list[Effect]:
        """Rule 4: persist "no vote" and the released round, then tell the members."""
        current = self.round
        assert current is not None
        releases = self._drop_round(current, abandoned)
        self.backoff_until = now + backoff_delay(self._config.backoff_max, rng.random())
        return [self.durable(), *releases]

    def _drop_round(self, current: Round, abandoned: Abandoned) -> list[Effect]:
        """Give up ``current``: no vote, its round released; the Releases to send once the
        caller's ``Store`` is persisted."""
        self.round = None
        self.vote = None
        self.released = (*self.released, current.vote)[-self._config.released_kept :]
        self.last_abandoned = abandoned
        return self._releases(current)

    def _releases(self, current: Round) -> list[Effect]:
        vote = current.vote
        release = Release(vote.proposer, vote.round, vote.nonce)
        view = current.view or ()
        return [Transmit(member, release) for member in view if member != self.node_id]

    def _release_again(self, voter: NodeId, vote: Vote, now: float) -> list[Effect]:
        if vote.proposer != self.node_id or vote not in self.released or voter == self.node_id:
            return []
        key = (voter, vote)
        last = self._rereleased.get(key)
        if last is not None and now - last < self._config.retransmit_interval:
            return []
        if len(self._rereleased) >= 1024:
            self._rereleased.clear()
        self._rereleased[key] = now
        return [Transmit(voter, Release(vote.proposer, vote.round, vote.nonce))]

    def _drop_vote_if(self, vote: Vote) -> list[Effect]:
        held = self.vote
        if self.decision is not None or held is None or vote.proposer == self.node_id:
            return []
        if not self._release_frees(held, vote):
            return []
        self.vote = None
        return [self.durable()]

    def _ack(self, vote: Vote) -> Ack:
        return Ack(vote.proposer, vote.round, vote.nonce, self.node_id)

    def _refuse(self, message: Propose, reason: RefuseReason) -> list[Effect]:
        refuse = Refuse(
            message.proposer,
            message.round,
            message.nonce,
            self.node_id,
            reason,
            self.vote,
            self.decision,
        )
        return [Transmit(message.proposer, refuse)]


def is_other_machine(own_incarnation: int, incarnation: int) -> bool:
    """Rule 8, detection: a record with this node's id and another boot id comes from
    another machine (a cloned data dir) when its incarnation is not below ours; a leftover
    of an earlier start of this node has a smaller one. The node then stops proposing
    (``Election.on_duplicate``)."""
    return incarnation >= own_incarnation


# --- After the decision: who installs when -------------------------------------------------


class PeerProgress(Protocol):
    """What the installer's waits read of a peer (``PeerInfo`` has it)."""

    @property
    def node_id(self) -> NodeId: ...
    @property
    def role(self) -> Role: ...
    @property
    def alive(self) -> bool: ...
    @property
    def decision(self) -> Decision | None: ...
    @property
    def progress(self) -> Progress: ...


def init_ready(decision: Decision, peers: Iterable[PeerProgress]) -> bool:
    """Rule 9: joiners install once the init node's record says READY."""
    return any(p.node_id == decision.init_node and p.progress is Progress.READY for p in peers)


def join_turn(node_id: NodeId, decision: Decision, peers: Iterable[PeerProgress]) -> bool:
    """Rule 10: servers join one at a time, in node-id order (k3s and rke2 fail on
    simultaneous server joins): it is ``node_id``'s turn when no live server of the same
    decision with a smaller id, other than the init node, is still waiting or installing.
    A server that died or failed blocks nobody."""
    return not any(
        peer.alive
        and peer.role is Role.SERVER
        and peer.node_id != decision.init_node
        and peer.node_id < node_id
        and peer.decision == decision
        and peer.progress in (Progress.WAITING, Progress.INSTALLING)
        for peer in peers
    )


def election_message_problem(
    message: ElectionMessage, sender: NodeId, known: Container[str]
) -> str | None:
    """Why the core must not act on ``message`` from ``sender``, or None.

    The fields that name the sender (``Propose.proposer``, ``Ack.voter``, ``Refuse.voter``,
    ``Release.proposer``) must be the authenticated sender itself: nobody acks, refuses or
    releases on another node's behalf.
    """
    if type(message) is Propose:
        return _propose_problem(message, sender, known)
    if type(message) is Ack:
        return _ack_problem(message, sender, known)
    if type(message) is Refuse:
        return _refuse_problem(message, sender, known)
    if type(message) is Release:
        return _release_problem(message, sender)
    if type(message) is Commit:
        return decision_problem(message.decision, known)
    return f"not an election message: {type(message).__name__}"


def _propose_problem(message: Propose, sender: NodeId, known: Container[str]) -> str | None:
    if message.proposer != sender:
        return "Propose.proposer is not the sender"
    if not (is_uint(message.round) and is_uint(message.nonce)):
        return "Propose round or nonce out of range"
    problem = ids_problem(message.view, known, MAX_VIEW)
    if problem is not None:
        return "Propose.view: " + problem
    if message.proposer not in message.view:
        return "the proposer is not in its own view"
    return None


def _ack_problem(message: Ack, sender: NodeId, known: Container[str]) -> str | None:
    if message.voter != sender:
        return "Ack.voter is not the sender"
    if not (is_uint(message.round) and is_uint(message.nonce)):
        return "Ack round or nonce out of range"
    return id_problem(message.proposer, known)


def _refuse_problem(message: Refuse, sender: NodeId, known: Container[str]) -> str | None:
    if message.voter != sender:
        return "Refuse.voter is not the sender"
    if not (is_uint(message.round) and is_uint(message.nonce)):
        return "Refuse round or nonce out of range"
    if type(message.reason) is not RefuseReason:
        return "unknown refuse reason"
    problem = id_problem(message.proposer, known)
    if problem is None and message.vote is not None:
        problem = vote_problem(message.vote, known)
    if problem is None and message.decision is not None:
        problem = decision_problem(message.decision, known)
    return problem


def _release_problem(message: Release, sender: NodeId) -> str | None:
    if message.proposer != sender:
        return "Release.proposer is not the sender"
    if not (is_uint(message.round) and is_uint(message.nonce)):
        return "Release round or nonce out of range"
    return None
