"""Safety invariants, checked after every delivered event (not only at the end).

A node's *identity* is its data dir: it survives a restart that keeps the data and is
replaced by a new one when the data dir is wiped. The checker is fed every decision as it
happens and answers at once:

- ``two-inits``: at most one cluster-init ever (distinct cluster ids among the identities
  that became cluster-init);
- ``late-init``: an identity that first booted after the first decision anywhere never
  becomes cluster-init;
- ``disagree``: every decided identity holds the same cluster id;
- ``changed``: an identity never changes its decision (a restart resumes it).

An algorithm may add checks of its own steps (``new_audit``; the gossip algorithm's are in
``sim/audit.py``), reported through ``protocol``.

In a scenario with ``allow_split: true`` (2N or more servers partitioned on purpose) the
first three are counted as tolerated splits instead of failing the run; ``changed`` always
fails.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    time: float
    text: str


class InvariantChecker:
    def __init__(self, allow_split: bool) -> None:
        self.allow_split = allow_split
        self.violations: list[Finding] = []
        self.tolerated: list[Finding] = []
        self.first_decision: float | None = None
        self._decision: dict[str, str] = {}
        self._init_clusters: dict[str, str] = {}
        """cluster id -> the first identity that became its cluster-init."""
        self._clusters: dict[str, str] = {}
        """cluster id -> the first identity that decided it."""

    @property
    def failed(self) -> bool:
        return bool(self.violations)

    @property
    def clusters(self) -> int:
        return len(self._clusters)

    @property
    def init_identities(self) -> int:
        return len(self._init_clusters)

    def _report(self, kind: str, now: float, text: str, *, always: bool = False) -> None:
        finding = Finding(kind, now, text)
        if self.allow_split and not always:
            self.tolerated.append(finding)
        else:
            self.violations.append(finding)

    def protocol(self, kind: str, now: float, text: str) -> None:
        """A step that breaks the election's own rules (``sim/audit.py``): always fails."""
        self._report(kind, now, text, always=True)

    def decided(
        self, identity: str, first_boot: float, cluster_id: str, role: str, now: float
    ) -> None:
        """``identity`` decided ``cluster_id`` as ``role`` at virtual time ``now``."""
        previous = self._decision.get(identity)
        if previous is not None:
            if previous != cluster_id:
                self._report(
                    "changed",
                    now,
                    f"{identity} changed its decision from cluster {previous} to {cluster_id}",
                    always=True,
                )
            return
        if self.first_decision is None:
            self.first_decision = now
        self._decision[identity] = cluster_id
        if role == "cluster-init":
            if first_boot > self.first_decision:
                self._report(
                    "late-init",
                    now,
                    f"{identity} booted at {first_boot:.3f}s, after the first decision "
                    f"({self.first_decision:.3f}s), and became cluster-init",
                )
            if cluster_id not in self._init_clusters:
                others = sorted(self._init_clusters.items())
                self._init_clusters[cluster_id] = identity
                if others:
                    named = ", ".join(f"{who} ({cid})" for cid, who in others)
                    self._report(
                        "two-inits",
                        now,
                        f"{identity} became cluster-init of {cluster_id}; already "
                        f"cluster-init: {named}",
                    )
        if cluster_id not in self._clusters:
            others = sorted(self._clusters.items())
            self._clusters[cluster_id] = identity
            if others:
                named = ", ".join(f"{cid} (first {who})" for cid, who in others)
                self._report(
                    "disagree",
                    now,
                    f"{identity} decided cluster {cluster_id}; others decided {named}",
                )
