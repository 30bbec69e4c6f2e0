"""Discovery: where a node's peers are.

``params`` parses and checks the go-discover style parameters and holds ``REGISTRY``, the
one table of providers; ``make_provider`` turns checked parameters into the ``Provider``
the table names (``mdns``, ``static``, ``file``, ``srv``), whose ``run`` advertises this
node where it can and sends the endpoints it finds.

The providers (trio, zeroconf, dnspython) are imported on first use, and only the one in
use, so that loading and checking a config, which imports ``rancherd.discovery.params``,
stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rancherd.discovery.params import DEFAULT_SERVER_CACHE_DURATION, REGISTRY, DiscoveryParams

if TYPE_CHECKING:
    from rancherd.discovery.file import FileProvider
    from rancherd.discovery.mdns import MdnsProvider
    from rancherd.discovery.provider import Advertisement, Provider, ProviderSettings
    from rancherd.discovery.srv import SrvProvider
    from rancherd.discovery.static import StaticProvider

__all__ = [
    "Advertisement",
    "DiscoveryParams",
    "FileProvider",
    "MdnsProvider",
    "Provider",
    "ProviderSettings",
    "SrvProvider",
    "StaticProvider",
    "make_provider",
]

_LAZY = {
    "Advertisement": "rancherd.discovery.provider",
    "Provider": "rancherd.discovery.provider",
    "ProviderSettings": "rancherd.discovery.provider",
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
    params: DiscoveryParams,
    *,
    default_port: int,
    refresh: float | None = None,
    server_cache_duration: float | None = None,
) -> Provider:
    """The provider ``params`` names, from ``REGISTRY``. ``default_port`` is the port of
    addresses given without one (static, file); mDNS and srv learn each peer's port from
    its SRV record. ``refresh`` (seconds between unchanged answers) defaults to 5;
    ``server_cache_duration`` (the gossip layer's, default 60 s) sets how often mDNS asks
    again."""
    from rancherd.discovery.provider import DEFAULT_REFRESH, Provider, ProviderSettings

    settings = ProviderSettings(
        default_port,
        DEFAULT_REFRESH if refresh is None else refresh,
        DEFAULT_SERVER_CACHE_DURATION if server_cache_duration is None else server_cache_duration,
    )
    # Only the provider in use is imported: zeroconf and dnspython cost tens of
    # milliseconds of start-up each, for nodes that do not use them.
    cls = REGISTRY[params.provider].load()
    if not issubclass(cls, Provider):
        raise TypeError(f"{cls.__name__} is not a discovery Provider")
    return cls.create(params, settings)
