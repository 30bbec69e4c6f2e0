"""Deterministic simulator of rancherd fleets (not installed with the package)."""
