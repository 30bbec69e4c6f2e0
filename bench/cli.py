"""``python -m bench``: one click group; each command measures, prints, saves its figures.

Every command adds its series to bench/results.json (a rerun of one configuration replaces
only its own figures); ``report`` (run at the end of ``all``) writes them into
docs/PERFORMANCE.md between its markers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import click
import trio

from bench.results import Series, save_series, stamp
from rancherd.kinds import USER_PRESETS

_PRESETS = click.Choice([preset.value for preset in USER_PRESETS])
"""The gossip presets a run may choose (``rancherd.kinds``)."""

T = TypeVar("T")
MODES = ("netns-mdns", "loopback-static", "inprocess")


def _echo(text: str) -> None:
    click.echo(text, err=True)


def _finish(series: Series) -> None:
    save_series(stamp(series))
    click.echo(series.describe())


def _run(job: Callable[[], Awaitable[T]]) -> T:
    """``trio.run(job)``; Ctrl-C (after everything was cleaned up) ends with "Aborted!"."""
    try:
        return trio.run(job)
    except KeyboardInterrupt:
        raise click.Abort() from None
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            raise click.Abort() from None
        raise


def _need_root_for(mode: str) -> None:
    if mode != "netns-mdns":
        return
    from bench.netns import netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason is not None:
        raise click.ClickException(f"--mode netns-mdns {reason}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Benchmarks of real rancherd nodes, and of serf for comparison. Not run in CI."""


@cli.command()
@click.option("--mode", type=click.Choice(MODES), required=True)
@click.option("--nodes", type=click.IntRange(1, 128), default=3, show_default=True)
@click.option("--runs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--preset", type=_PRESETS, default="lan", show_default=True)
@click.option(
    "--seeds",
    type=click.IntRange(1, 128),
    default=None,
    help="loopback-static: list only the first K nodes in every config [default: all].",
)
@click.option("--limit", type=float, default=60.0, show_default=True, help="Seconds per run.")
@click.option(
    "--busy",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Processes: busy loops spinning beside the fleet, spread over the CPUs (a loaded "
    "machine, as a CI runner can be).",
)
def decide(
    mode: str, nodes: int, runs: int, preset: str, seeds: int | None, limit: float, busy: int
) -> None:
    """Time from the last process start until every node has decided."""
    from bench.rancherd_bench import decide_inprocess, decide_processes

    _need_root_for(mode)
    if mode == "inprocess":
        if busy:
            raise click.UsageError("--busy is for the process modes (see `overload`)")
        job = partial(decide_inprocess, nodes, runs, preset, limit, _echo)
    else:
        job = partial(decide_processes, mode, nodes, runs, preset, limit, seeds, _echo, busy=busy)
    _finish(_run(job))


@cli.command()
@click.option("--nodes", type=click.IntRange(2, 250), default=50, show_default=True)
@click.option("--runs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--limit", type=float, default=120.0, show_default=True, help="Seconds per run.")
@click.option("--poll", type=float, default=0.1, show_default=True, help="Seconds between asks.")
def serf(nodes: int, runs: int, limit: float, poll: float) -> None:
    """serf agents on loopback: time until every agent lists every agent alive."""
    from bench.serf_bench import membership_serf

    _finish(_run(partial(membership_serf, nodes, runs, limit, poll, _echo)))


@cli.command()
@click.option("--nodes", type=click.IntRange(2, 127), default=50, show_default=True)
@click.option("--runs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--preset", type=_PRESETS, default="lan", show_default=True)
@click.option("--limit", type=float, default=120.0, show_default=True, help="Seconds per run.")
@click.option("--poll", type=float, default=0.1, show_default=True, help="Seconds between asks.")
def members(nodes: int, runs: int, preset: str, limit: float, poll: float) -> None:
    """rancherd nodes on loopback: time until every node lists every other node alive."""
    from bench.rancherd_bench import membership_rancherd

    _finish(_run(partial(membership_rancherd, nodes, runs, preset, limit, poll, _echo)))


@cli.command()
@click.option("--runs", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--settle", type=float, default=10.0, show_default=True, help="Seconds idle.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (start-up CPU, idle RSS) instead of saving the series.",
)
def rss(runs: int, settle: float, as_json: bool) -> None:
    """Resident memory, start-up and idle CPU of an idle rancherd node and serf agent."""
    from bench.rss import idle_rss, rss_summary

    measured = _run(partial(idle_rss, runs, settle, _echo))
    if as_json:
        _print_result(rss_summary(measured), as_json=True)
        return
    for series in measured:
        _finish(series)


def _print_result(document: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(document, sort_keys=True))
    else:
        click.echo(" ".join(f"{key}={value}" for key, value in document.items()))
    sys.stdout.flush()


@cli.command()
@click.option("--servers", type=click.IntRange(1, 1000), required=True)
@click.option("--agents", type=click.IntRange(0, 10_000), default=0, show_default=True)
@click.option("--expected", type=click.IntRange(1, 1000), default=None, help="[default: --servers]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--preset", type=_PRESETS, default="lan", show_default=True)
@click.option(
    "--limit", type=float, default=60.0, show_default=True, help="Virtual seconds to wait."
)
@click.option(
    "--max-connections",
    type=click.IntRange(2, 100_000),
    default=None,
    help="Each node's connection limit [default: TransportLimits' 512].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def traffic(
    servers: int,
    agents: int,
    expected: int | None,
    seed: int,
    preset: str,
    limit: float,
    max_connections: int | None,
    as_json: bool,
) -> None:
    """Frames and bytes per node per second, in-memory fleet on virtual time, until decided."""
    from bench.traffic import run_traffic, traffic
    from rancherd.gossip.transport import TransportLimits

    limits = None if max_connections is None else TransportLimits(max_connections=max_connections)
    # Printed as soon as measured: stopping a thousand nodes takes minutes more.
    job = partial(
        traffic,
        servers,
        agents,
        expected or servers,
        seed=seed,
        preset=preset,
        limit=limit,
        limits=limits,
        report=_echo,
        on_result=lambda result: _print_result(result.as_dict(), as_json),
    )
    run_traffic(job)


@cli.command("frame-cost")
@click.option("--nodes", type=click.IntRange(2, 100), default=10, show_default=True)
@click.option("--preset", type=_PRESETS, default="lan", show_default=True)
@click.option("--limit", type=float, default=60.0, show_default=True, help="Seconds to decide.")
@click.option("--settle", type=float, default=3.0, show_default=True, help="Seconds after it.")
@click.option("--window", type=float, default=20.0, show_default=True, help="Seconds measured.")
@click.option(
    "--pace",
    type=click.Choice(("busy", "rest")),
    default="busy",
    show_default=True,
    help="busy: the decided fleet keeps the election's frame rate; rest: the preset's own.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def frame_cost(
    nodes: int,
    preset: str,
    limit: float,
    settle: float,
    window: float,
    pace: str,
    as_json: bool,
) -> None:
    """CPU per sealed frame, websocket transport, nodes in one process, after the decision."""
    from bench.frame_cost import frame_cost as measure

    result = _run(partial(measure, nodes, preset, limit, settle, window, _echo, pace))
    _print_result(result, as_json)


@cli.command()
@click.option("--nodes", type=click.IntRange(2, 100), default=30, show_default=True)
@click.option("--preset", type=_PRESETS, default="lan", show_default=True)
@click.option("--limit", type=float, default=90.0, show_default=True, help="Seconds to decide.")
@click.option("--cpu", type=int, default=None, help="The core to share [default: the last].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def overload(nodes: int, preset: str, limit: float, cpu: int | None, as_json: bool) -> None:
    """Nodes in one process pinned to one core that a busy loop shares: decided or stuck?"""
    from bench.overload import busy_neighbour, overload, pick_cpu, pinned_to

    core = pick_cpu() if cpu is None else cpu
    with busy_neighbour(core, limit + 60.0), pinned_to(core):
        result = _run(partial(overload, nodes, preset, limit, core, _echo))
    _print_result(result, as_json)


@cli.command("compare-serf")
@click.option("--nodes", type=click.IntRange(2, 127), default=50, show_default=True)
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--preset", type=_PRESETS, default="lan", show_default=True)
@click.option("--limit", type=float, default=120.0, show_default=True, help="Seconds per run.")
@click.option("--poll", type=float, default=0.1, show_default=True, help="Seconds between asks.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare_serf(
    nodes: int, runs: int, preset: str, limit: float, poll: float, as_json: bool
) -> None:
    """rancherd and serf membership convergence on loopback, alternating runs."""
    from bench.compare_serf import compare_serf as measure

    _print_result(_run(partial(measure, nodes, runs, preset, limit, poll, _echo)), as_json)


@cli.command()
def report() -> None:
    """Write bench/results.json into docs/PERFORMANCE.md (between its markers)."""
    from bench.report import write_report

    click.echo(f"wrote {write_report()}")


@cli.command("all")
@click.pass_context
def all_command(ctx: click.Context) -> None:
    """Everything, sized to about 15 minutes on 2 vCPU, then ``report``.

    \b
    decide --mode netns-mdns --nodes 3|5 --preset lan|local --runs 8   (needs root)
    decide --mode loopback-static --nodes 50 --runs 2 --limit 90
    decide --mode inprocess --nodes 50 --runs 2 --limit 45
    members --nodes 50 --runs 2 --limit 90
    serf --nodes 50 --runs 3 --limit 90
    rss --runs 2
    """
    from bench.netns import netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason is None:
        for nodes in (3, 5):
            for preset in ("lan", "local"):
                ctx.invoke(decide, mode="netns-mdns", nodes=nodes, runs=8, preset=preset)
    else:
        _echo(f"skipping netns-mdns: {reason}")
    ctx.invoke(decide, mode="loopback-static", nodes=50, runs=2, limit=90.0)
    ctx.invoke(decide, mode="inprocess", nodes=50, runs=2, limit=45.0)
    ctx.invoke(members, nodes=50, runs=2, limit=90.0)
    ctx.invoke(serf, nodes=50, runs=3, limit=90.0)
    ctx.invoke(rss, runs=2)
    ctx.invoke(report)


def main() -> None:
    cli()
