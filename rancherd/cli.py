"""The ``rancherd`` command line: one click group, thin commands, one context object.

The group builds an ``Invocation`` (``rancherd.cli_options``) from the shared options
(``--config``, ``--data-dir`` and their environment variables); each command takes it
with ``@pass_invocation``, asks it for the config or the data dir, calls the module that
does the work, and turns that module's errors into exit statuses and messages.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import click

from rancherd import __version__
from rancherd.cli_options import (
    IMPLICIT_PATHS_ENV,
    InvalidConfig,
    Invocation,
    SharedOptionsCommand,
    group_options,
    pass_invocation,
)
from rancherd.config import CLOUD_CONFIG_PATHS, DEFAULT_CONFIG_PATH, IMPLICIT_PATHS

if TYPE_CHECKING:
    from rancherd.state import DataDir

__all__ = ["IMPLICIT_PATHS_ENV", "InvalidConfig", "cli", "main"]


class _Group(click.Group):
    """The group, with the installer's commands imported only when one of them runs (or
    help lists them): every other command starts without the installer's modules."""

    command_class = SharedOptionsCommand
    _lazy: ClassVar[tuple[str, ...]] = ("plan", "get-token")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._lazy:
            return super().get_command(ctx, cmd_name)
        installer = importlib.import_module("rancherd.install.command")
        command: click.Command = installer.COMMANDS[cmd_name]
        return command


@click.group(
    cls=_Group,
    params=group_options(),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="rancherd")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Turn machines booted from one config into one Kubernetes cluster.

    Every machine runs the same config. The servers find each other, agree on who is
    there, and exactly one of them creates the cluster; every other node joins it.
    """
    ctx.ensure_object(Invocation)


# --- config ---------------------------------------------------------------------------


def _cloud_note(path: Path) -> str:
    return "  (cloud-config: only its rancherd: key)" if path in CLOUD_CONFIG_PATHS else ""


_CONFIG_HELP = f"""Check the config and print it as rancherd will use it.

Prints the effective config, merged from every file rancherd reads, with the file each
top-level key came from; the token (and anything that looks like a password) is shown
as <redacted>. Nothing is started and nothing is written.

\b
rancherd reads these files in this order, skipping missing ones:
{chr(10).join(f"  {i}. {path}{_cloud_note(path)}" for i, path in enumerate(IMPLICIT_PATHS, 1))}
  {len(IMPLICIT_PATHS) + 1}. --config PATH (default {DEFAULT_CONFIG_PATH}, which may be missing)

A directory in that list adds its *.yaml and *.yml files in name order. After each file
come its drop-ins, FILE.d/*.yaml, in name order. A file with a top-level rancherd: key
counts only for that key; a cloud-config (first line #cloud-config) counts only for
its rancherd: key. Later files win: maps merge key by key, lists are joined.

The config is strict: an unknown key, a wrong type, a duplicate key or a value YAML
reads differently from how it looks (token: 0123 is the number 83, on is true) is an
error. Exit status 0: the config is valid. Exit status 2: every problem is printed on
stderr, one per line, as FILE:LINE: KEY: MESSAGE.

\b
Examples:
  rancherd config
  rancherd config --config examples/three-node-mdns.yaml
  rancherd config --json | jq .config.discovery

See docs/CONFIG.md for every key.
"""


@cli.command("config", help=_CONFIG_HELP, shared=("config",))
@click.option("--json", "as_json", is_flag=True, help="Print JSON: config, sources and files.")
@pass_invocation
def config_command(invocation: Invocation, as_json: bool) -> None:
    loaded = invocation.loaded
    if as_json:
        click.echo(json.dumps(loaded.to_json_dict(), indent=2))
    else:
        click.echo(loaded.to_text(), nl=False)


# --- discover ---------------------------------------------------------------------------


@cli.command("discover")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="Seconds to wait for a decision.",
)
@click.option(
    "--linger",
    type=click.FloatRange(min=0.0),
    default=0.0,
    help="Seconds to stay up after deciding, answering nodes that start later.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every peer event, not only changes.")
@pass_invocation
def discover_command(
    invocation: Invocation,
    as_json: bool,
    timeout: float,
    linger: float,
    verbose: bool,
) -> None:
    """Find the other nodes, agree on the cluster, print this node's part in it.

    Runs discovery and the election only: nothing is installed, nothing outside the data
    dir changes. The vote and the decision are stored in the data dir, so a later
    `rancherd bootstrap` with the same data dir carries out this very decision.

    Prints the role (cluster-init, server or agent), the server URL to join, the cluster
    id, this node's id and the seconds it took. Stays up (at most 10 s) until every member
    of the decision knows it too.

    \b
    Exit status: 0 decided; 1 no decision before --timeout (the last status line says
    what it waited for); 2 bad config.
    """
    import trio

    from rancherd.discover import run_discover, setup_logging
    from rancherd.node import NodeError
    from rancherd.state import StateError

    config, directory = invocation.config, invocation.data_dir
    setup_logging(verbose)
    try:
        result = trio.run(run_discover, config, directory, timeout, linger)
    except (NodeError, StateError) as exc:
        raise click.ClickException(str(exc)) from None
    if result.outcome is None:
        if as_json:  # a script reading stdout learns what the node waited for, too
            undecided = {"decided": False, "seconds": timeout, "status": result.last_status}
            click.echo(json.dumps({**undecided, "waiting_for": result.waiting_for}, indent=2))
        click.echo(f"no decision after {timeout:g}s: {result.last_status}", err=True)
        raise SystemExit(1)
    outcome = result.outcome
    if as_json:
        decided = {"decided": True, **outcome.as_dict(), "informed": result.informed}
        click.echo(json.dumps(decided, indent=2))
        return
    join = "" if outcome.server_url is None else f" joining {outcome.server_url}"
    click.echo(f"role: {outcome.role}{join}")
    click.echo(f"cluster: {outcome.cluster_id} (init node {outcome.init_node})")
    click.echo(f"node: {outcome.node_id}")
    click.echo(f"decided in {outcome.seconds:.3f}s")
    if not result.informed:
        click.echo("note: not every member confirmed the decision before exit", err=True)


# --- peers ------------------------------------------------------------------------------


@cli.command("peers")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@click.option(
    "--watch",
    is_flag=True,
    help="Redraw at every change (and each second) until Ctrl-C; appends when piped.",
)
@pass_invocation
def peers_command(invocation: Invocation, as_json: bool, watch: bool) -> None:
    """Show what the running node waits for, and every peer it knows.

    Asks the rancherd running on this machine (through the control socket in its data
    dir). The first line is the node's status in one sentence ("have 2 of 3 servers ...;
    waiting for ..."), as of the moment asked; the table lists each peer: id, role, state
    (alive or expired), addresses, when it was last heard of, how it was learned
    (discovery, gossip or direct), whether it agrees with this node (same view; once
    decided, same decision), and its install progress. An address discovery lists but
    where nobody answers gets a row too ("no answer"): not a rancherd, another token, or
    a firewall in between.

    \b
    With --watch, the view is redrawn in place on a terminal (one JSON line or one text
    block per change when piped). Exit status: 0 (Ctrl-C ends --watch); 1 no node
    answers, or the node stopped while watched.
    """
    import sys
    import time

    import trio

    from rancherd.control import ControlError, fetch_snapshots
    from rancherd.peers_view import WatchScreen, render

    socket_path = invocation.data_dir.control_socket
    screen = WatchScreen(terminal=sys.stdout.isatty() and not as_json)

    async def show() -> dict[str, object] | None:
        last: dict[str, object] | None = None
        async with contextlib.aclosing(fetch_snapshots(socket_path, watch=watch)) as stream:
            async for snapshot in stream:
                last = snapshot
                if as_json:
                    click.echo(json.dumps(snapshot, indent=None if watch else 2))
                elif watch:
                    click.echo(screen.frame(snapshot, time.strftime("%H:%M:%S")), nl=False)
                else:
                    click.echo(render(snapshot), nl=False)
        return last

    try:
        last = trio.run(show)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        return
    if watch:
        click.echo(screen.stopped(last, time.strftime("%H:%M:%S")), nl=False, err=True)
        raise SystemExit(1)


# --- demo -------------------------------------------------------------------------------


@cli.command("demo", shared=())
@click.option(
    "--nodes",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Servers to start (all expected).",
)
@click.option(
    "--loss",
    type=click.FloatRange(0.0, 0.95),
    default=0.3,
    show_default=True,
    help="Share of discovery answers dropped, as a lossy mDNS network would.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1.0),
    default=60.0,
    show_default=True,
    help="Seconds before the demo gives up.",
)
@click.option("--seed", type=int, default=None, help="Seed for the dropped answers.")
@click.option("-v", "--verbose", is_flag=True, help="Show the nodes' log lines too.")
def demo_command(nodes: int, loss: float, timeout: float, seed: int | None, verbose: bool) -> None:
    """Watch a fleet of real nodes elect one cluster-init, on this machine only.

    Starts --nodes real rancherd nodes on 127.0.0.1, 127.0.0.2, ... (no root needed,
    no traffic beyond loopback) with temporary data dirs and a shared random token, shows
    each node's status as it changes, prints who became cluster-init and the plan each
    node would apply (nothing is installed), and cleans up.

    Exit status: 0 all decided on one cluster; 1 otherwise.
    """
    import logging

    import trio

    from rancherd.demo import run_demo
    from rancherd.discover import setup_logging

    setup_logging(verbose)
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
    result = trio.run(lambda: run_demo(nodes, loss, timeout, click.echo, seed=seed))
    for line in result.report():
        click.echo(line)
    if not result.one_cluster:
        raise SystemExit(1)


# --- bootstrap ----------------------------------------------------------------------------


@cli.command("bootstrap")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help=(
        "Apply the plan under this directory instead of / (tests); only programs inside it "
        "run, never the host's (plan --root shows which)."
    ),
)
@click.option("--force", is_flag=True, help="Apply the plan again even after the done stamp.")
@click.option("--dry-run", is_flag=True, help="Decide and print the plan; apply nothing.")
@click.option("-v", "--verbose", is_flag=True, help="Log every peer event, not only changes.")
@pass_invocation
def bootstrap_command(
    invocation: Invocation,
    root: Path,
    force: bool,
    dry_run: bool,
    verbose: bool,
) -> None:
    """Decide this node's role, install the runtime, then stay up as a beacon.

    The boot-time flow (run by packaging/rancherd.service): with discovery, find the
    other nodes and elect the cluster-init node (as long as it takes; `rancherd peers`
    says what it waits for); without, the config decides (role cluster-init, or server
    without server:, creates the cluster; otherwise join server:). Then apply the plan
    (see `rancherd plan`): joining servers wait for the init node to be ready and join
    one at a time. The done stamp is written only once the runtime runs. Then the node
    keeps answering discovery, so nodes booted later find the cluster.

    Re-running after the done stamp goes straight to the beacon. After a failed step,
    re-running resumes at that step.

    \b
    Exit status: 0 done (or, with --dry-run, decided); 1 a step failed (named, with
    the end of its output) or the node cannot start; 2 bad config.
    """
    import trio

    from rancherd.bootstrap import BootstrapError, Stopped, run_bootstrap
    from rancherd.discover import setup_logging
    from rancherd.install.apply import StepFailed
    from rancherd.install.builders import PlanError
    from rancherd.node import NodeError
    from rancherd.notify import Notifier
    from rancherd.state import StateError

    config, directory = invocation.config, invocation.data_dir
    setup_logging(verbose)
    notifier = Notifier.from_env(os.environ)
    try:
        decision, plan = trio.run(
            lambda: run_bootstrap(
                config,
                directory,
                root=root,
                force=force,
                dry_run=dry_run,
                notifier=notifier,
            )
        )
    except StepFailed as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    except Stopped as exc:
        # 128 + SIGTERM, as a shell reports it; the unit counts it as a clean stop.
        click.echo(str(exc), err=True)
        raise SystemExit(143) from None
    except (BootstrapError, NodeError, StateError, PlanError) as exc:
        raise click.ClickException(str(exc)) from None
    join = "" if decision.server_url is None else f", joining {decision.server_url}"
    click.echo(f"decision ({decision.how}): {decision.role}{join}")
    if dry_run and plan is not None:
        click.echo(plan.to_text(), nl=False)


# --- reset --------------------------------------------------------------------------------


@cli.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--forget-install",
    is_flag=True,
    help="Also remove the done stamp and the plan's progress (the runtime stays installed).",
)
@pass_invocation
def reset_command(invocation: Invocation, yes: bool, forget_install: bool) -> None:
    """Release this node's vote and decision, when the cluster-init node is gone for good.

    A server that voted keeps its vote until the proposer that holds it releases it, and
    a decided node keeps its decision: that is what makes two clusters impossible. If the
    proposer or the cluster-init node will never come back, the operator frees the nodes
    with this command, on each of them, with rancherd stopped. The node id, incarnation
    and round counter are kept, so old rounds cannot be confused with new ones.

    This can form a second cluster if the old one still runs somewhere: only reset when
    the old cluster-init node is really gone.
    """
    from rancherd.state import DataDirBusy, StateError

    directory = invocation.data_dir
    try:
        if not directory.exists():  # locking would create it
            click.echo(f"nothing to reset: {directory.path} does not exist")
            return
        directory.lock()
    except DataDirBusy:
        raise click.ClickException(
            f"rancherd is running with {directory.path}: stop it first (systemctl stop rancherd)"
        ) from None
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        _reset(directory, yes, forget_install)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        directory.unlock()


def _reset(directory: DataDir, yes: bool, forget_install: bool) -> None:
    held = directory.held()
    if held.damaged is not None:
        click.echo(f"warning: {held.damaged}", err=True)
        click.echo("the damaged state is replaced by an empty one", err=True)
    vote, decision = held.vote, held.decision
    if vote is None and decision is None and not (forget_install and held.done):
        click.echo(f"nothing to reset in {directory.path}: no vote, no decision")
        return
    if vote is not None:
        click.echo(f"vote: for {vote.proposer} in round {vote.round}")
    if decision is not None:
        click.echo(
            f"decision: cluster {decision.cluster_id}, "
            f"init node {decision.init_node} at {decision.init_host}"
        )
    if held.done and not forget_install:
        click.echo("note: the done stamp stays (this node ran its runtime); see --forget-install")
    if not yes:
        click.confirm("Release them?", abort=True)
    directory.release(held, forget_install=forget_install)
    click.echo("released; start rancherd again to take part in a new election")


# --- info ---------------------------------------------------------------------------------

_INFO_DECISION_KEYS = ("cluster_id", "init_node", "init_host")
"""The part of a decision ``info`` shows (``peers`` shows the members)."""


@cli.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_invocation
def info_command(invocation: Invocation, as_json: bool) -> None:
    """Versions, this node's id and its state in the data dir (nothing is started)."""
    import platform

    from rancherd.gossip.messages import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
    from rancherd.state import StateError, decision_json, vote_json

    directory = invocation.data_dir
    info: dict[str, object] = {
        "rancherd": __version__,
        "python": platform.python_version(),
        "protocol": f"{MIN_PROTOCOL_VERSION}-{PROTOCOL_VERSION}",
        "data_dir": str(directory.path),
    }
    problems: list[str] = []
    try:
        node_id = directory.read_node_id()
        state = directory.load_gossip()
        done = directory.load_done()
    except StateError as exc:
        problems.append(str(exc))
        node_id, state, done = None, None, None
    vote = None if state is None else state.vote
    decision = None if state is None else state.decision
    info["node_id"] = node_id
    info["vote"] = None if vote is None else vote_json(vote)
    if decision is None:
        info["decision"] = None
    else:
        shown = decision_json(decision)
        info["decision"] = {key: shown[key] for key in _INFO_DECISION_KEYS}
    info["done"] = (
        None
        if done is None
        else {"role": done.role, "server_url": done.server_url, "runtime": done.runtime}
    )
    info["running"] = directory.in_use()
    if problems:
        info["problems"] = problems
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key}: {_plain(value)}")


def _plain(value: object) -> str:
    """A value of ``info`` as an operator reads it: ``-`` for none, ``key value, ...``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return "; ".join(_plain(item) for item in value) or "-"
    return str(value)


def main() -> None:
    cli()
