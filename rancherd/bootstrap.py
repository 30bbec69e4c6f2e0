"""``rancherd bootstrap``: load config, decide, apply the plan, write the done stamp, beacon.

The run-once flow of a boot-time daemon:

1. A done stamp in the data dir means this node already runs its cluster: go straight to
   the beacon (``--force`` applies the plan again).
2. Decide. With ``discovery``, run the node until the election decides (as long as it
   takes; ``rancherd peers`` says what it waits for). Without it, the original rules:
   ``role: cluster-init``, or ``role: server`` with no ``server``, creates the cluster;
   otherwise join ``server``.
3. Apply the plan (``rancherd.install``) under ``--root``. Joining servers wait for the
   init node to be ready and for their turn, both read from gossip: each node publishes
   its install progress in its record. A failed step stops with its name and output tail,
   is published as ``failed`` so the other nodes' ``peers`` show it, and a rerun resumes
   at that step.
4. Write the done stamp, only after every step (the last ones probe the running runtime).
5. Beacon: keep the node up, answering discovery and gossip with the committed decision,
   so that a node booted a month later finds the cluster and joins it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from rancherd.config import Config, Role
from rancherd.discover import cancel_on_signals
from rancherd.gossip.election import JoinRole, init_ready, join_turn
from rancherd.gossip.messages import Progress
from rancherd.install.apply import StepFailed, StepState, apply_plan
from rancherd.install.builders import PlanOptions, build_plan
from rancherd.install.plan import PeerWait, Plan, Step, WaitForPeers
from rancherd.node import Node, Outcome, single_errors
from rancherd.state import DataDir, DoneStamp

__all__ = [
    "BootstrapError",
    "Decision",
    "GossipHooks",
    "Stopped",
    "decide_statically",
    "run_bootstrap",
]

log = logging.getLogger("rancherd")

FAILED_LINGER = 3.0
"""Seconds a node whose plan failed stays up, so gossip carries ``failed`` to its peers."""


class BootstrapError(Exception):
    """The bootstrap cannot go on; the message says why."""


class Stopped(BootstrapError):
    """SIGTERM or SIGINT arrived before the node finished its plan."""


@dataclass(frozen=True, slots=True)
class Decision:
    """This node's part: create the cluster, or join ``server_url`` as server or agent."""

    role: JoinRole
    server_url: str | None
    cluster_id: str | None = None
    how: str = "config"


def decide_statically(config: Config) -> Decision:
    """The original rancherd's rules, for a config without discovery."""
    if config.role is Role.CLUSTER_INIT or (config.role is Role.SERVER and not config.server):
        return Decision(JoinRole.CLUSTER_INIT, None)
    if not config.server:
        raise BootstrapError(
            f"role {config.role} without discovery needs server: the URL of a node to join"
        )
    role = JoinRole.SERVER if config.role is Role.SERVER else JoinRole.AGENT
    return Decision(role, config.server)


def _from_outcome(outcome: Outcome) -> Decision:
    return Decision(outcome.role, outcome.server_url, outcome.cluster_id, "election")


class GossipHooks:
    """Answers the plan's waits from the peers' progress, and publishes ours.

    ``init-ready`` and ``join-turn`` are the election's rules 9 and 10
    (``gossip/election.py``: ``init_ready``, ``join_turn``), read from the peer table.
    """

    def __init__(self, node: Node, plan: Plan, poll: float = 0.2) -> None:
        self._node = node
        self._poll = poll
        # Installing starts after the last wait: before it, the node is still WAITING
        # (pre-instructions of a joiner run while it waits its turn).
        self._step_index = {step_id: index for index, step_id in enumerate(plan.step_ids())}
        self._installing_from = max(
            (i + 1 for i, step in enumerate(plan.steps) if isinstance(step, WaitForPeers)),
            default=0,
        )

    def _init_ready(self) -> bool:
        driver = self._node.driver
        if driver is None or driver.core.decision is None:
            return False
        return init_ready(driver.core.decision, driver.peers())

    def _my_turn(self) -> bool:
        driver = self._node.driver
        if driver is None or driver.core.decision is None:
            return False
        return join_turn(driver.core.node_id, driver.core.decision, driver.peers())

    async def wait_for_peers(self, step: WaitForPeers) -> None:
        check = self._init_ready if step.kind is PeerWait.INIT_READY else self._my_turn
        driver = self._node.driver
        assert driver is not None
        limit = trio.fail_after(step.timeout) if step.timeout else contextlib.nullcontext()
        with limit:
            while not check():
                with trio.move_on_after(self._poll):
                    await driver.wait_changed()

    def on_step(self, step_id: str, step: Step, state: StepState, detail: str) -> None:
        driver = self._node.driver
        if driver is None:
            return
        if state is StepState.FAILED:
            driver.set_progress(Progress.FAILED)
        elif (
            state in (StepState.STARTED, StepState.ALREADY_DONE, StepState.SKIPPED)
            and self._step_index[step_id] >= self._installing_from
        ):
            driver.set_progress(Progress.INSTALLING)


def _stamp_for(decision: Decision, plan: Plan) -> DoneStamp:
    return DoneStamp(
        role=decision.role.value,
        server_url=decision.server_url,
        cluster_id=decision.cluster_id,
        runtime=plan.runtime,
        finished_at=time.time(),
    )


async def run_bootstrap(
    config: Config,
    data_dir: DataDir,
    *,
    root: Path,
    force: bool = False,
    dry_run: bool = False,
    beacon: bool = True,
    options: PlanOptions | None = None,
) -> tuple[Decision, Plan | None]:
    """The whole flow; returns (decision, plan) for ``--dry-run`` and for tests
    (``beacon=False`` returns after the done stamp instead of serving forever). Errors
    come out one at a time (``StepFailed``, ``NodeError``...), not in exception groups."""
    with single_errors():
        return await _run_bootstrap(config, data_dir, root, force, dry_run, beacon, options)


async def _run_bootstrap(
    config: Config,
    data_dir: DataDir,
    root: Path,
    force: bool,
    dry_run: bool,
    beacon: bool,
    options: PlanOptions | None,
) -> tuple[Decision, Plan | None]:
    options = options or PlanOptions.from_env()
    stamp = data_dir.load_done()
    if stamp is not None and not force and not dry_run:
        log.info(
            "done stamp found (%s of %s): this node runs its cluster; serving as beacon",
            stamp.role,
            stamp.server_url or "its own cluster",
        )
        decision = Decision(JoinRole(stamp.role), stamp.server_url, stamp.cluster_id, "stamp")
        if config.discovery is not None and beacon:
            await _serve_beacon(config, data_dir)
        return decision, None

    if config.discovery is None:
        decision = decide_statically(config)
        plan = build_plan(config, decision.role, decision.server_url, options=options)
        if dry_run:
            return decision, plan
        data_dir.create()
        await apply_plan(plan, root=root, state_dir=data_dir.path)
        data_dir.save_done(_stamp_for(decision, plan))
        log.info("done: this node runs %s as %s", plan.runtime, decision.role)
        return decision, plan

    return await _elect_and_apply(config, data_dir, root, dry_run, beacon, options)


async def _elect_and_apply(
    config: Config,
    data_dir: DataDir,
    root: Path,
    dry_run: bool,
    beacon: bool,
    options: PlanOptions,
) -> tuple[Decision, Plan | None]:
    node = Node(config, data_dir)
    decision: Decision | None = None
    plan: Plan | None = None
    phase = "starting"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
        await nursery.start(node.run)
        phase = "waiting for the election"
        outcome = await node.wait_decided()
        decision = _from_outcome(outcome)
        log.info(
            "decided in %.3fs: %s%s",
            outcome.seconds,
            decision.role,
            "" if decision.server_url is None else f", joining {decision.server_url}",
        )
        plan = build_plan(config, decision.role, decision.server_url, options=options)
        if dry_run:
            nursery.cancel_scope.cancel()
            return decision, plan
        assert node.driver is not None
        node.driver.set_progress(Progress.WAITING)
        phase = "applying the plan"
        try:
            await apply_plan(
                plan, root=root, state_dir=data_dir.path, hooks=GossipHooks(node, plan)
            )
        except StepFailed:
            node.driver.set_progress(Progress.FAILED)
            with trio.move_on_after(FAILED_LINGER):
                await trio.sleep_forever()
            raise
        data_dir.save_done(_stamp_for(decision, plan))
        node.driver.set_progress(Progress.READY)
        phase = "beacon"
        log.info("done: this node runs %s as %s; serving as beacon", plan.runtime, decision.role)
        if not beacon:
            # Let gossip carry READY before going (a joiner may be waiting for it).
            with trio.move_on_after(1.0):
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
    if phase != "beacon" or decision is None or plan is None:
        # A signal ended the node before its plan was done; a rerun resumes.
        raise Stopped(f"stopped by a signal while {phase}; the next start resumes from there")
    return decision, plan


async def _serve_beacon(config: Config, data_dir: DataDir) -> None:
    """Run the node with its persisted decision until a signal stops it."""
    node = Node(config, data_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
        await nursery.start(node.run)
        assert node.driver is not None
        if node.driver.core.decision is None:
            log.warning(
                "done stamp present but no decision in %s: serving gossip without one",
                data_dir.gossip_file,
            )
        node.driver.set_progress(Progress.READY)
