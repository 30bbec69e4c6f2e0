"""Whole nodes on the in-memory transport, for the tests that run a ``Node`` in process
(the node, the control socket, the data dir's hardening, ``peers --watch``)."""

from __future__ import annotations

from pathlib import Path

from rancherd.config import Config, DiscoveryConfig, Preset, Secret
from rancherd.discovery.params import DiscoveryParams
from rancherd.gossip.election import JoinRole
from rancherd.gossip.memory_transport import MemoryNetwork
from rancherd.gossip.transport import Transport, TransportLimits
from rancherd.node import Node
from rancherd.state import DataDir

__all__ = ["PORT", "make_config", "make_node"]

PORT = 8443


def make_config(index: int, count: int, tmp_path: Path, *, expected: int | None = None) -> Config:
    """Node ``index`` of ``count`` servers on 10.1.0.x, each listing all of them."""
    addrs = " ".join(f"10.1.0.{i + 1}:{PORT}" for i in range(count))
    return Config(
        role=JoinRole.SERVER,
        token=Secret("node test token"),
        discovery=DiscoveryConfig(
            params=DiscoveryParams.from_mapping({"provider": "static", "addrs": addrs}),
            expected_servers=expected or count,
            listen_address=f"10.1.0.{index + 1}",
            port=PORT,
            preset=Preset.LOCAL,
        ),
        address=f"10.1.0.{index + 1}",
        data_dir=tmp_path / f"node-{index}",
    )


def make_node(network: MemoryNetwork, config: Config) -> Node:
    assert config.discovery is not None
    address = f"{config.discovery.listen_address}:{PORT}"

    def transport(limits: TransportLimits) -> Transport:
        return network.transport(address, limits)

    return Node(config, DataDir(config.data_dir), transport_factory=transport)
