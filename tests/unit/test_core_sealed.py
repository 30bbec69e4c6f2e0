"""Cores wired through real sealed channels: a node without the token is never counted.

The hand-wired ``Network`` delivers messages as objects. Here every delivery goes through a
``SecureChannel`` pair between sender and receiver, as the websocket transport will do it:
hellos first, then sealed frames, and a channel that fails stays closed (the connection
would be dropped). The intruder is given the lowest node id, so that if it were counted
at all it would be the one proposing.
"""

from __future__ import annotations

import random

from gossip_harness import Envelope, Network

from rancherd.gossip.core import Peer
from rancherd.gossip.errors import RemoteProtocolError
from rancherd.gossip.messages import Role, view_digest
from rancherd.gossip.security import SecureChannel, TokenKeys

GOOD = TokenKeys.derive("the fleet's token")
WRONG = TokenKeys.derive("a guess")
INTRUDER_ID = "0" * 32


class SealedNetwork(Network):
    """Delivers every message through a per-pair channel sealed with each node's keys."""

    def __init__(self, keys: dict[str, TokenKeys], seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.keys = keys
        self.channels: dict[tuple[str, str], tuple[SecureChannel, SecureChannel] | None] = {}
        self.rejected = 0
        self._bytes = random.Random(f"sealed-{seed}")

    def _channel_pair(self, sender: str, receiver: str) -> tuple[SecureChannel, SecureChannel]:
        """An established pair (initiator at ``sender``), or RemoteProtocolError."""
        key = (sender, receiver)
        if key in self.channels:
            pair = self.channels[key]
            if pair is None:
                raise RemoteProtocolError("connection was closed")
            return pair
        a, b = self.nodes[sender], self.nodes[receiver]
        assert a.core is not None
        assert b.core is not None
        initiator = SecureChannel(
            self.keys[sender],
            a.node_id,
            a.core.boot_id,
            initiator=True,
            random_bytes=self._bytes.randbytes,
        )
        responder = SecureChannel(
            self.keys[receiver],
            b.node_id,
            b.core.boot_id,
            initiator=False,
            random_bytes=self._bytes.randbytes,
        )
        try:
            for reply in responder.receive(initiator.start()).frames:
                for finished in initiator.receive(reply).frames:
                    responder.receive(finished)
        except RemoteProtocolError:
            self.channels[key] = None
            raise
        self.channels[key] = (initiator, responder)
        return initiator, responder

    def deliver(self, index: int = 0) -> None:
        envelope: Envelope = self.in_flight.pop(index)
        target = self.target_of(envelope)
        if target is None or target.core is None:
            return
        if not self._reachable(envelope.sender, target.name):
            return
        try:
            initiator, responder = self._channel_pair(envelope.sender, target.name)
            received = responder.receive(initiator.seal(envelope.send.message)).messages
        except RemoteProtocolError:
            self.rejected += 1
            return
        # The receiver knows the sender only as the channel authenticated it.
        assert responder.peer_id is not None
        assert responder.peer_boot_id is not None
        src = Peer(responder.peer_id, responder.peer_boot_id, envelope.src.address)
        for message in received:
            self.delivered += 1
            target.core.receive(message, src, self.now)
            self._drain(target)


def test_a_node_with_a_wrong_token_is_never_counted_and_learns_nothing() -> None:
    keys = {"s0": GOOD, "s1": GOOD, "s2": GOOD, "intruder": WRONG}
    net = SealedNetwork(keys, seed=3)
    net.add_servers(3)
    net.add(Role.SERVER, "intruder", node_id=INTRUDER_ID)
    net.discover_all()

    good = ["s0", "s1", "s2"]
    assert net.run_until(lambda: net.all_decided(good), timeout=30.0)
    net.run(5.0)  # let gossip settle, so the intruder gets every chance to be heard

    inits = net.cluster_inits()
    assert len(inits) == 1
    ((init_name, _),) = inits
    assert init_name in good
    assert len({net.decision_of(name) for name in good}) == 1
    for name in good:
        core = net.core(name)
        assert INTRUDER_ID not in core.status(net.now).view
        good_view = tuple(sorted(net.core(other).record().node_id for other in good))
        assert core.record().view_digest == view_digest(good_view)
        assert INTRUDER_ID not in {peer.node_id for peer in core.peers(net.now)}
    intruder = net.core("intruder")
    assert intruder.decision is None
    assert intruder.peers(net.now) == []
    assert net.rejected > 0


def test_the_sealed_network_carries_a_normal_election() -> None:
    """Control: the same wiring with one token everywhere reaches a decision with all four."""
    names = ["s0", "s1", "s2", "s3"]
    net = SealedNetwork(dict.fromkeys(names, GOOD), seed=3)
    net.add_servers(4)
    net.discover_all()
    assert net.run_until(lambda: net.all_decided(names), timeout=30.0)
    assert len(net.cluster_inits()) == 1
    assert net.rejected == 0
