"""Hypothesis drives 3 to 7 hand-wired cores through arbitrary faults; safety after every step.

Rules deliver any message in flight (so any order), drop or duplicate one, let time pass,
crash a node (its unconfirmed writes are lost, its disk stays), restart one from its disk,
give one a fresh discovery answer, or cut the network in two.

After every step:
- with fewer than 2N servers, every decision anywhere names the same cluster (so at most
  one node was ever told to be cluster-init);
- no node's decision ever changes, across restarts included.

At the end (teardown) faults stop: everyone crashed restarts (so no vote waits for a proposer
that never comes back), the network heals and delivers everything on time, and every node
must decide within a bounded virtual time.
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
        self.n = data.draw(st.integers(1, servers), label="expected_servers")
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

    # --- faults and progress

    @precondition(lambda self: bool(self.net.in_flight))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.net.in_flight) - 1), label="deliver")
        self.net.deliver(index)

    @precondition(lambda self: bool(self.net.in_flight))
    @rule(data=st.data())
    def deliver_everything(self, data: st.DataObject) -> None:
        for _ in range(min(len(self.net.in_flight), 50)):
            self.net.deliver(0)

    @precondition(lambda self: bool(self.net.in_flight))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.net.drop(data.draw(st.integers(0, len(self.net.in_flight) - 1), label="drop"))

    @precondition(lambda self: bool(self.net.in_flight))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.net.duplicate(data.draw(st.integers(0, len(self.net.in_flight) - 1), label="dup"))

    @rule(dt=st.sampled_from([0.05, 0.3, 1.0, 3.5]))
    def advance(self, dt: float) -> None:
        self.net.advance(dt)

    @rule(dt=st.sampled_from([0.01, 0.1, 0.5, 2.0]), loss=st.sampled_from([0.0, 0.0, 0.3]))
    def run_for_a_while(self, dt: float, loss: float) -> None:
        """The network works on its own for ``dt`` (messages arrive on time, some lost)."""
        self.net.loss = loss
        self.net.run(dt)
        self.net.loss = 0.0

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

    def _election_messages(self) -> list[int]:
        return [
            index
            for index, envelope in enumerate(self.net.in_flight)
            if not isinstance(envelope.send.message, Gossip)
        ]

    @precondition(lambda self: bool(self._election_messages()))
    @rule(data=st.data(), deliver=st.booleans())
    def deliver_or_drop_an_election_message(self, data: st.DataObject, deliver: bool) -> None:
        index = data.draw(st.sampled_from(self._election_messages()), label="election message")
        if deliver:
            self.net.deliver(index)
        else:
            self.net.drop(index)

    @precondition(lambda self: bool(self.net.in_flight))
    @rule()
    def converge_gossip(self) -> None:
        """Deliver gossip (and what it causes) until only election messages are in flight."""
        for _ in range(500):
            gossip = [
                i for i, e in enumerate(self.net.in_flight) if isinstance(e.send.message, Gossip)
            ]
            if not gossip:
                return
            self.net.deliver(gossip[0])

    @precondition(lambda self: bool(self._election_messages()))
    @rule(data=st.data())
    def lose_election_messages_to(self, data: st.DataObject) -> None:
        """Every election message in flight to one node is lost."""
        targets = sorted({self.net.in_flight[i].send.to or "" for i in self._election_messages()})
        target = data.draw(st.sampled_from(targets), label="lose election messages to")
        self.net.drop_where(
            lambda e: e.send.to == target and not isinstance(e.send.message, Gossip)
        )

    @precondition(lambda self: bool(self.net.in_flight))
    @rule()
    def lose_everything_in_flight(self) -> None:
        self.net.in_flight.clear()

    @rule(data=st.data())
    def isolate(self, data: st.DataObject) -> None:
        names = list(self.net.nodes)
        alone = data.draw(st.sampled_from(names), label="isolate")
        self.net.partition([alone], [n for n in names if n != alone])

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
