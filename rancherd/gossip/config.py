"""Tuning of the gossip engine: one dataclass, named defaults, presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Placeholder: the core issue fills in every knob with a commented default."""

    expected_servers: int = 3
    server_cache_duration: float = 60.0
