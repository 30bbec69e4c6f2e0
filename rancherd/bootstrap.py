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
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import trio

from rancherd.config import Config
from rancherd.decision import BootstrapError, Decision, decide_statically
from rancherd.discover import cancel_on_signals
from rancherd.gossip.election import JoinRole, init_ready, join_turn
from rancherd.gossip.messages import Progress
from rancherd.install.apply import Hooks, NoPeers, StepFailed, StepState, apply_plan
from rancherd.install.builders import PlanOptions, build_plan
from rancherd.install.plan import PeerWait, Plan, Step, WaitForPeers
from rancherd.node import Node, Outcome, single_errors
from rancherd.notify import Notifier
from rancherd.state import DataDir, DoneStamp

__all__ = [
    "BootstrapError",
    "Decision",
    "GossipHooks",
    "Reporter",
    "Stopped",
    "decide_statically",
    "run_bootstrap",
]

log = logging.getLogger("rancherd")

FAILED_LINGER = 3.0
"""Seconds a node whose plan failed stays up, so gossip carries ``failed`` to its peers."""


class Stopped(BootstrapError):
    """SIGTERM or SIGINT arrived before the node finished its plan."""


def _from_outcome(outcome: Outcome) -> Decision:
    return Decision(outcome.role, outcome.server_url, outcome.cluster_id, "election")


class Reporter:
    """What the daemon tells systemd (``STATUS=``, ``READY=1``): the node's status line as
    of now, then what the bootstrap is doing (the plan step under way)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.node: Node | None = None
        self.doing: str | None = None
        self._changed = trio.Event()
        self._ready = False

    def text(self) -> str:
        status = None if self.node is None else self.node.status
        line = None if status is None else status.text
        if self._ready and line is not None and line.startswith("decided: "):
            line = None  # the ready text says it; a SPLIT or a cloned id still shows
        parts = [part for part in (line, self.doing) if part]
        return "; ".join(parts) or "starting"

    def attach(self, node: Node) -> None:
        """``node`` runs: its status line leads from now on."""
        self.node = node
        self.set(self.doing)

    def set(self, doing: str | None) -> None:
        """What the bootstrap does now (``None``: nothing to add to the node's line)."""
        self.doing = doing
        self.notifier.status(self.text())
        self._changed.set()
        self._changed = trio.Event()

    def ready(self, doing: str) -> None:
        self.doing = doing
        self._ready = True
        self.notifier.ready(self.text())

    async def wait_changed(self) -> None:
        """Return at the node's next status change or the next ``set``."""
        own = self._changed
        driver = None if self.node is None else self.node.driver
        if driver is None:
            await own.wait()
            return
        async with trio.open_nursery() as nursery:

            async def first(wait: Callable[[], Awaitable[None]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, own.wait)
            nursery.start_soon(first, driver.wait_changed)

    def hooks(self, inner: Hooks, plan: Plan) -> Hooks:
        return _ReportedHooks(inner, self, plan)


_WAITING_FOR = {
    PeerWait.INIT_READY: "waiting for the init node to be ready",
    PeerWait.JOIN_TURN: "waiting for its turn to join (one server at a time)",
}


class _ReportedHooks:
    """``inner``'s hooks, with each step's state reported to systemd."""

    def __init__(self, inner: Hooks, reporter: Reporter, plan: Plan) -> None:
        self._inner = inner
        self._reporter = reporter
        self._count = len(plan.steps)
        self._where = "plan"

    async def wait_for_peers(self, step: WaitForPeers) -> None:
        self._reporter.set(f"{self._where}: {_WAITING_FOR.get(step.kind, 'waiting')}")
        await self._inner.wait_for_peers(step)

    def on_step(self, step_id: str, step: Step, state: StepState, detail: str) -> None:
        self._where = where = f"plan step {step_id} of {self._count:02d}"
        if state is StepState.STARTED and not isinstance(step, WaitForPeers):
            self._reporter.set(f"{where}: running")
        elif state is StepState.RETRYING:
            self._reporter.set(f"{where}: retrying ({detail})" if detail else f"{where}: retrying")
        elif state is StepState.FAILED:
            self._reporter.set(f"{where}: failed ({detail})")
        self._inner.on_step(step_id, step, state, detail)


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
    notifier: Notifier | None = None,
) -> tuple[Decision, Plan | None]:
    """The whole flow; returns (decision, plan) for ``--dry-run`` and for tests
    (``beacon=False`` returns after the done stamp instead of serving forever). Errors
    come out one at a time (``StepFailed``, ``NodeError``...), not in exception groups.

    ``notifier`` (systemd's ``$NOTIFY_SOCKET``) hears the status at every change, READY
    once the done stamp is written, STOPPING at the end, and the watchdog's pings."""
    notifier = notifier or Notifier(None, None)
    reporter = Reporter(notifier)
    args = (config, data_dir, root, force, dry_run, beacon, options, reporter)
    with single_errors():
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(notifier.feed_watchdog)
                nursery.start_soon(notifier.follow, reporter.text, reporter.wait_changed)
                result = await _run_bootstrap(*args)
                nursery.cancel_scope.cancel()
        finally:
            notifier.stopping(f"stopping; last status: {reporter.text()}")
            notifier.close()
    return result


async def _run_bootstrap(
    config: Config,
    data_dir: DataDir,
    root: Path,
    force: bool,
    dry_run: bool,
    beacon: bool,
    options: PlanOptions | None,
    reporter: Reporter,
) -> tuple[Decision, Plan | None]:
    # The plan knows its root: under one, its commands are found inside it (install/inroot.py).
    options = replace(options or PlanOptions.from_env(), root=str(root))
    stamp = data_dir.load_done()
    if stamp is not None and not force and not dry_run:
        log.info(
            "done stamp found (%s of %s): this node runs its cluster; serving as beacon",
            stamp.role,
            stamp.server_url or "its own cluster",
        )
        decision = Decision(JoinRole(stamp.role), stamp.server_url, stamp.cluster_id, "stamp")
        reporter.ready(_done_text(decision, stamp.runtime))
        if config.discovery is not None and beacon:
            await _serve_beacon(config, data_dir, reporter)
        return decision, None

    if config.discovery is None:
        decision = decide_statically(config)
        plan = build_plan(config, decision.role, decision.server_url, options=options)
        if dry_run:
            return decision, plan
        data_dir.create()
        reporter.set(f"the config decides: {decision.role}")
        finished = False
        async with trio.open_nursery() as nursery:
            # Without a node there is no other task: SIGTERM cancels the plan (its
            # command's process group is terminated) and the next start resumes.
            nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
            hooks = reporter.hooks(NoPeers(), plan)
            await apply_plan(plan, root=root, state_dir=data_dir.path, hooks=hooks)
            data_dir.save_done(_stamp_for(decision, plan))
            finished = True
            nursery.cancel_scope.cancel()
        if not finished:
            raise Stopped("stopped by a signal while applying the plan; the next start resumes")
        log.info("done: this node runs %s as %s", plan.runtime, decision.role)
        reporter.ready(_done_text(decision, plan.runtime))
        return decision, plan

    return await _elect_and_apply(config, data_dir, root, dry_run, beacon, options, reporter)


def _done_text(decision: Decision, runtime: str) -> str:
    join = "" if decision.server_url is None else f", joined to {decision.server_url}"
    return f"bootstrapped: {runtime} runs as {decision.role}{join}"


async def _elect_and_apply(
    config: Config,
    data_dir: DataDir,
    root: Path,
    dry_run: bool,
    beacon: bool,
    options: PlanOptions,
    reporter: Reporter,
) -> tuple[Decision, Plan | None]:
    node = Node(config, data_dir)
    decision: Decision | None = None
    plan: Plan | None = None
    phase = "starting"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
        await nursery.start(node.run)
        reporter.attach(node)
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
            hooks = reporter.hooks(GossipHooks(node, plan), plan)
            await apply_plan(plan, root=root, state_dir=data_dir.path, hooks=hooks)
        except StepFailed:
            node.driver.set_progress(Progress.FAILED)
            with trio.move_on_after(FAILED_LINGER):
                await trio.sleep_forever()
            raise
        data_dir.save_done(_stamp_for(decision, plan))
        node.driver.set_progress(Progress.READY)
        reporter.ready(_done_text(decision, plan.runtime) + "; serving as beacon")
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


async def _serve_beacon(config: Config, data_dir: DataDir, reporter: Reporter) -> None:
    """Run the node with its persisted decision until a signal stops it."""
    node = Node(config, data_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
        await nursery.start(node.run)
        reporter.attach(node)
        assert node.driver is not None
        if node.driver.core.decision is None:
            log.warning(
                "done stamp present but no decision in %s: serving gossip without one",
                data_dir.gossip_file,
            )
        node.driver.set_progress(Progress.READY)
