"""Benchmarks of the real rancherd node, side by side with HashiCorp serf (not run in CI).

``python -m bench all`` runs everything (about 12 minutes on 2 vCPU; netns needs root) and
writes the figures into docs/PERFORMANCE.md; ``python -m bench --help`` lists the parts.
"""
