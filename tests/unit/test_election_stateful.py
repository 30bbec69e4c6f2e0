"""Hypothesis drives 3 to 7 hand-wired cores through arbitrary faults; safety after every step.

The adversary picks any election message in flight to deliver, drop or duplicate (so any
order), does the same with gossip, lets time pass with or without the network running,
crashes a node (its unconfirmed writes are lost, its disk stays) and restarts it, cuts the
network, reboots a group behind a partition, and may make a server act on an agreement of
its choosing (views can be stale in ways few schedules produce; safety must not depend on
them).

After every step:
- with fewer than 2N servers, every decision anywhere names the same cluster (so at most
  one node was ever told to be cluster-init);
- no node's decision ever changes, across restarts included.

At the end (teardown) faults stop: everyone crashed restarts (so no vote waits for a proposer
that never comes back), the network heals and delivers everything on time, and every node
must decide within a bounded virtual time.

How strong is it? Random schedules rarely build the long, precise sequences that break a
rule. Measured by mutating ``election.py``: without the sticky vote of rule 2, a 200-example
CI run fails about one time in three; committing after a single ack takes about a thousand
examples; a non-exact Release was not found. The directed tests in ``test_core.py`` and the
rule tests in ``test_election.py`` catch each of these every time; this machine is the net
for interleavings nobody thought of.
"""

from __future__ import annotations

import dataclasses

from gossip_harness import Network
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rancherd.gossip.config import GossipConfig
from rancherd.gossip.messages import Decision, Gossip, Role

CONFIG = dataclasses.replace(
    GossipConfig.lan(),
    gossip_interval=0.5,
    push_pull_interval=5.0,
    server_cache_duration=4.0,
    startup_grace=0.5,
    retransmit_interval=0.5,
    round_timeout=3.0,
    backoff_max=1.0,
    contact_interval=1.0,
)


class ElectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Network(CONFIG)
        self.servers = 0
        self.n = 1
        self.first_decision: dict[str, Decision] = {}

    @initialize(
        servers=st.integers(1, 5),
        agents=st.integers(0, 2),
        data=st.data(),
        seed=st.integers(0, 2**32 - 1),
    )
    def boot(self, servers: int, agents: int, data: st.DataObject, seed: int) -> None:
        servers = max(servers, 3 - agents)
        self.servers = servers
        # Mostly N > servers / 2: fewer than 2N servers, where one cluster is guaranteed.
        below_2n = st.integers(servers // 2 + 1, servers)
        self.n = data.draw(below_2n | st.integers(1, servers), label="expected_servers")
        config = dataclasses.replace(CONFIG, expected_servers=self.n)
        self.net = Network(config, seed=seed, jitter=0.01, check_codec=False)
        self.net.add_servers(servers)
        self.net.add_agents(agents)
        self.net.discover_all()
        if data.draw(st.booleans(), label="warm start"):
            # Start where it gets interesting: views have converged, the grace is over and
            # the first Propose is in flight.
            self.converge_gossip()
            self.net.advance(CONFIG.startup_grace)
            self.converge_gossip()

    # --- messages

    def _in_flight(self, gossip: bool) -> list[int]:
        return [
            index
            for index, envelope in enumerate(self.net.in_flight)
            if isinstance(envelope.send.message, Gossip) == gossip
        ]

    @precondition(lambda self: bool(self._in_flight(gossip=False)))
    @rule(data=st.data(), action=st.sampled_from(["deliver", "deliver", "drop", "duplicate"]))
    def election_message(self, data: st.DataObject, action: str) -> None:
        index = data.draw(st.sampled_from(self._in_flight(gossip=False)), label="which")
        getattr(self.net, action)(index)

    @precondition(lambda self: bool(self._in_flight(gossip=True)))
    @rule(data=st.data(), deliver=st.booleans())
    def gossip_message(self, data: st.DataObject, deliver: bool) -> None:
        index = data.draw(st.sampled_from(self._in_flight(gossip=True)), label="which")
        if deliver:
            self.net.deliver(index)
        else:
            self.net.drop(index)

    @precondition(lambda self: bool(self.net.in_flight))
    @rule()
    def converge_gossip(self) -> None:
        """Deliver gossip (and what it causes) until only election messages are in flight."""
        for _ in range(500):
            gossip = self._in_flight(gossip=True)
            if not gossip:
                return
            self.net.deliver(gossip[0])

    @precondition(lambda self: bool(self.net.in_flight))
    @rule()
    def lose_everything_in_flight(self) -> None:
        self.net.in_flight.clear()

    # --- time

    @rule(dt=st.sampled_from([0.05, 0.3, 1.0, 3.5]))
    def advance(self, dt: float) -> None:
        """Time passes and timers fire, but nothing is delivered."""
        self.net.advance(dt)

    @rule(dt=st.sampled_from([0.01, 0.1, 0.5, 2.0]), loss=st.sampled_from([0.0, 0.0, 0.3]))
    def run_for_a_while(self, dt: float, loss: float) -> None:
        """The network works on its own for ``dt`` (messages arrive on time, some lost)."""
        self.net.loss = loss
        self.net.run(dt)
        self.net.loss = 0.0

    # --- nodes and the network

    @precondition(lambda self: bool(self.net.live()))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([node.name for node in self.net.live()]), label="crash")
        self.net.crash(name)

    @precondition(lambda self: len(self.net.live()) < len(self.net.nodes))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        down = [node.name for node in self.net.nodes.values() if not node.up]
        self.net.restart(data.draw(st.sampled_from(down), label="restart"))

    @precondition(lambda self: bool(self.net.live()))
    @rule(data=st.data())
    def discover(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([node.name for node in self.net.live()]), label="who")
        self.net.discover(name)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        names = list(self.net.nodes)
        side = data.draw(st.sets(st.sampled_from(names)), label="side")
        self.net.partition(sorted(side), [n for n in names if n not in side])

    @rule(data=st.data())
    def reboot_a_group_behind_a_partition(self, data: st.DataObject) -> None:
        """Some machines restart (forgetting every peer) cut off from the others."""
        names = list(self.net.nodes)
        group = data.draw(st.sets(st.sampled_from(names), min_size=1), label="group")
        self.net.partition(sorted(group), [n for n in names if n not in group])
        for name in sorted(group):
            if self.net.nodes[name].up:
                self.net.crash(name)
            self.net.restart(name)
        for name in sorted(group):
            self.net.discover(name)

    @rule()
    def heal(self) -> None:
        self.net.heal()

    @rule(data=st.data())
    def believe_in_some_agreement(self, data: st.DataObject) -> None:
        """A live server X acts as if it had agreement on any V with X = min(V), |V| >= N.

        The safety argument rests on sticky votes, exact releases and acks from all of V,
        never on views being right, so the adversary may choose the view.
        """
        servers = sorted(
            (node for node in self.net.live() if node.identity.role is Role.SERVER),
            key=lambda node: node.node_id,
        )
        if not servers:
            return
        proposer = data.draw(st.sampled_from(servers), label="believer")
        higher = sorted(
            {
                node.node_id
                for node in self.net.nodes.values()
                if node.identity.role is Role.SERVER and node.node_id > proposer.node_id
            }
        )
        if len(higher) + 1 < self.n:
            return
        members = data.draw(
            st.lists(st.sampled_from(higher), min_size=self.n - 1, unique=True)
            if higher
            else st.just([]),
            label="believed view",
        )
        view = tuple(sorted([proposer.node_id, *members]))
        assert proposer.core is not None
        table = proposer.core._table
        setattr(table, "agreement", lambda expected_servers: view)  # noqa: B010
        try:
            self.net.poke(proposer.name)
        finally:
            delattr(table, "agreement")

    # --- safety, after every step

    @invariant()
    def one_cluster_below_2n_servers(self) -> None:
        if self.servers < 2 * self.n:
            assert len(self.net.cluster_ids()) <= 1, self.net.cluster_ids()
            assert len(self.net.cluster_inits()) <= 1, self.net.cluster_inits()

    @invariant()
    def decisions_never_change(self) -> None:
        for node in self.net.nodes.values():
            decisions = [event.decision for event in node.decided()]
            current = self.net.decision_of(node.name)
            if current is not None:
                decisions.append(current)
            if not decisions:
                continue
            first = self.first_decision.setdefault(node.name, decisions[0])
            assert all(decision == first for decision in decisions), node.name
            if node.identity.role is Role.AGENT:
                assert all(e.role.value == "agent" for e in node.decided())

    # --- liveness, once faults stop

    def teardown(self) -> None:
        net = self.net
        if not net.nodes:
            return
        net.heal()
        net.loss = 0.0
        for node in list(net.nodes.values()):
            if not node.up:
                net.restart(node.name)
        net.discover_all()
        decided = net.run_until(net.all_decided, 120.0)
        undecided = {
            node.name: node.core.status(net.now).text
            for node in net.live()
            if node.core is not None and node.core.decision is None
        }
        assert decided, undecided
        self.one_cluster_below_2n_servers()
        self.decisions_never_change()


ElectionMachine.TestCase.settings = settings(
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestElection = ElectionMachine.TestCase
