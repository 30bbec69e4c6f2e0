"""Planted bugs: the simulator must catch each one (``python -m sim mutants``).

A test-only mutation switch, never in the product: each mutant replaces one rule of
``rancherd.gossip.election.Election`` (the single-rule methods it exposes for this) or
one step of ``GossipCore``, for the duration of a ``with planted(mutant):`` block, in this
process only. ``hunt`` runs every mutant through the scenarios of ``HUNT`` (seed after
seed, scenario after scenario) until a run reports a violation; a mutant no run catches
is *missed*. The same runs without any mutant must report no violation at all
(``baseline``), or the catches would mean nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rancherd.gossip.core import GossipCore, Send
from rancherd.gossip.election import Effect, Election, Round, Transmit
from rancherd.gossip.messages import Vote
from sim import scenario as scenarios
from sim.world import run_seed


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    bug: str
    patches: tuple[tuple[type, str, Callable[..., Any]], ...]


def _ack_before_store(self: Election, vote: Vote) -> list[Effect]:
    self.vote = vote
    return [Transmit(vote.proposer, self._ack(vote)), self.durable()]


def _not_sticky(self: Election) -> bool:
    return False


def _majority(self: Election, current: Round) -> bool:
    view = current.view or ()
    return 2 * sum(member in current.acks for member in view) > len(view)


def _any_round(self: Election, held: Vote, released: Vote) -> bool:
    return held.proposer == released.proposer


def _no_barrier(self: GossipCore) -> list[Send]:
    sends = self._sends
    out = [send for _, send in sends]
    sends.clear()
    return out


_ELECTION_INIT = Election.__init__


def _forgetful_init(self: Election, *args: Any) -> None:
    config, node_id, is_server, api_host, vote, next_round, released, decision, now = args
    if decision is None and vote is not None and vote.proposer != node_id:
        vote = None
    _ELECTION_INIT(
        self, config, node_id, is_server, api_host, vote, next_round, released, decision, now
    )


def _nonce_blind(self: Election, held: Vote, other: Vote) -> bool:
    return (held.proposer, held.round) == (other.proposer, other.round)


def _one_short(self: Election, view: tuple[str, ...]) -> bool:
    return len(view) >= self._config.expected_servers - 1


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "ack-before-store",
        "an ack sent before the vote is stored",
        ((Election, "_vote_for", _ack_before_store),),
    ),
    Mutant(
        "vote-not-sticky",
        "a vote that is not sticky (a voter takes any later round)",
        ((Election, "_bound_elsewhere", _not_sticky),),
    ),
    Mutant(
        "commit-on-majority",
        "a commit on a majority of the view instead of all of it",
        ((Election, "_has_all_acks", _majority),),
    ),
    Mutant(
        "release-any-round",
        "a Release that frees any round of the proposer",
        ((Election, "_release_frees", _any_round),),
    ),
    Mutant(
        "barrier-skipped",
        "the persistence barrier skipped (messages leave before their write is on disk)",
        ((GossipCore, "messages_to_send", _no_barrier),),
    ),
    Mutant(
        "restart-forgets-vote",
        "a restarted node that forgets its vote",
        ((Election, "__init__", _forgetful_init),),
    ),
    Mutant(
        "nonce-ignored",
        "the vote's nonce ignored (same proposer and round is the same vote)",
        ((Election, "_same_vote", _nonce_blind),),
    ),
    Mutant(
        "agreement-off-by-one",
        "agreement off by one (N-1 servers are enough)",
        ((Election, "_enough", _one_short),),
    ),
)

HUNT: tuple[tuple[str, int], ...] = (
    ("happy-n3", 5),
    ("election-buggify", 40),
    ("crash-boundaries", 20),
    ("clone", 30),
    ("clone-apart", 200),
    ("views-differ", 20),
    ("clock-jump", 20),
    ("crash-restart", 20),
    ("partition-3-2", 10),
    ("extra-servers-4", 10),
    ("split-2n", 10),
)
"""Scenario and number of seeds (from 0) each mutant is hunted with, in this order."""


@contextlib.contextmanager
def planted(mutant: Mutant) -> Iterator[None]:
    saved = [(target, name, target.__dict__[name]) for target, name, _ in mutant.patches]
    try:
        for target, name, replacement in mutant.patches:
            setattr(target, name, replacement)
        yield
    finally:
        for target, name, original in saved:
            setattr(target, name, original)


@dataclass(frozen=True, slots=True)
class Catch:
    mutant: str
    caught_by: str | None
    """The first violation (``kind at time: text``), ``None`` when missed."""
    reproduce: str | None
    runs: int


def _runs(hunt: Sequence[tuple[str, int]]) -> Iterator[tuple[scenarios.Scenario, int]]:
    for name, seeds in hunt:
        loaded = scenarios.load(name)
        for seed in range(seeds):
            yield loaded, seed


def hunt(mutant: Mutant, runs: Sequence[tuple[str, int]] = HUNT, *, audit: bool = True) -> Catch:
    """Run ``mutant`` through ``runs`` until one run reports a violation (``audit=False``:
    only the decision invariants count, not ``sim/audit.py``)."""
    count = 0
    with planted(mutant):
        for count, (loaded, seed) in enumerate(_runs(runs), 1):
            result = run_seed(loaded, seed, "gossip", audit=audit)
            if result.violations:
                command = f"{result.reproduce} --mutant {mutant.name}"
                if not audit:
                    command += " --no-audit"
                found = f"{loaded.name}: {result.violations[0]}"
                return Catch(mutant.name, found, command, count)
    return Catch(mutant.name, None, None, count)


def score(
    mutants: Sequence[Mutant] = MUTANTS,
    runs: Sequence[tuple[str, int]] = HUNT,
    *,
    audit: bool = True,
) -> dict[str, Any]:
    """``{"mutants": n, "caught": k, "missed": [names], ...}`` with every catch and the
    unmutated runs' violations (``baseline``, which must be empty)."""
    catches = [hunt(mutant, runs, audit=audit) for mutant in mutants]
    return {
        "mutants": len(catches),
        "caught": sum(c.caught_by is not None for c in catches),
        "missed": [c.mutant for c in catches if c.caught_by is None],
        "baseline_violations": baseline(runs, audit=audit),
        "runs": sum(seeds for _, seeds in runs),
        "audit": audit,
        "catches": [
            {"mutant": c.mutant, "caught_by": c.caught_by, "runs": c.runs, "reproduce": c.reproduce}
            for c in catches
        ],
    }


def baseline(runs: Sequence[tuple[str, int]] = HUNT, *, audit: bool = True) -> list[str]:
    """Every violation of the same runs without a mutant (there must be none)."""
    found: list[str] = []
    for loaded, seed in _runs(runs):
        result = run_seed(loaded, seed, "gossip", audit=audit)
        found += [f"{result.reproduce}: {v}" for v in result.violations]
    return found


def by_name(name: str) -> Mutant:
    for mutant in MUTANTS:
        if mutant.name == name:
            return mutant
    raise KeyError(f"unknown mutant {name!r} (known: {', '.join(m.name for m in MUTANTS)})")
