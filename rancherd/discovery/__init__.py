"""Discovery: where a node's peers are.

``params`` parses and checks the go-discover style parameters; ``make_provider`` turns
them into a ``Provider`` (``mdns``, ``static``, ``file``, ``srv``), whose ``run`` advertises this
node where it can and sends the endpoints it finds.

The providers (trio, zeroconf) are imported on first use, so that loading and checking a
config, which imports ``rancherd.discovery.params``, stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rancherd.discovery.params import DiscoveryParams, MdnsParams, SrvParams, StaticParams

if TYPE_CHECKING:
    from rancherd.discovery.file import FileProvider
    from rancherd.discovery.mdns import MdnsProvider
    from rancherd.discovery.provider import Advertisement, Provider
    from rancherd.discovery.srv import SrvProvider
    from rancherd.discovery.static import StaticProvider

__all__ = [
    "Advertisement",
    "DiscoveryParams",
    "FileProvider",
    "MdnsProvider",
    "Provider",
    "SrvProvider",
    "StaticProvider",
    "make_provider",
]

_LAZY = {
    "Advertisement": "rancherd.discovery.provider",
    "Provider": "rancherd.discovery.provider",
    "FileProvider": "rancherd.discovery.file",
    "MdnsProvider": "rancherd.discovery.mdns",
    "SrvProvider": "rancherd.discovery.srv",
    "StaticProvider": "rancherd.discovery.static",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_provider(
    params: DiscoveryParams, *, default_port: int, refresh: float | None = None
) -> Provider:
    """The provider ``params`` names. ``default_port`` is the port of addresses given
    without one (static, file); mDNS and srv learn each peer's port from its SRV record.
    ``refresh`` (seconds between unchanged answers) defaults to 5."""
    from rancherd.discovery.provider import DEFAULT_REFRESH

    # Only the provider in use is imported: zeroconf and dnspython cost tens of
    # milliseconds of start-up each, for nodes that do not use them.
    every = DEFAULT_REFRESH if refresh is None else refresh
    typed = params.typed()
    if isinstance(typed, MdnsParams):
        from rancherd.discovery.mdns import MdnsProvider

        return MdnsProvider(typed, refresh=every)
    if isinstance(typed, StaticParams):
        from rancherd.discovery.static import StaticProvider

        return StaticProvider(typed, default_port=default_port, refresh=every)
    if isinstance(typed, SrvParams):
        from rancherd.discovery.srv import SrvProvider

        return SrvProvider(typed, refresh=every)
    from rancherd.discovery.file import FileProvider

    return FileProvider(typed, default_port=default_port, refresh=every)
