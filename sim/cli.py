"""``python -m sim``: run, sweep, report, bench, list, validate, mutants.

Run from the repository root (``sim`` is not installed with the package).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sim import scenario as scenarios
from sim.algorithms import ALGORITHMS
from sim.loop import TraceRecord
from sim.progress import Progress
from sim.runner import Summary, fmt_seconds, run_many, summarize
from sim.world import RunResult, World, run_seed

if TYPE_CHECKING:
    from sim.mutants import Mutant

REPO_ROOT = Path(__file__).resolve().parent.parent
ALGORITHM_CHOICES = [*ALGORITHMS, "both"]


class ScenarioProblem(click.ClickException):
    exit_code = 2


def _algorithms(choice: str) -> list[str]:
    return ["gossip", "classic"] if choice == "both" else [choice]


def _jobs(jobs: int) -> int:
    return (os.cpu_count() or 1) if jobs <= 0 else jobs


def _load(name: str, overrides: Sequence[str]) -> scenarios.Scenario:
    try:
        return scenarios.load(name, overrides)
    except scenarios.ScenarioError as exc:
        raise ScenarioProblem(str(exc)) from None


def _print_summary(summary: Summary, wall: float | None = None) -> None:
    last = summary.first_seed + summary.seeds - 1
    click.echo(
        f"{summary.scenario} / {summary.algorithm}: {summary.seeds} seeds "
        f"({summary.first_seed}..{last}), {summary.seeds_decided} decided, "
        f"{summary.violations} violating"
        + (
            f", {summary.tolerated_split_seeds} tolerated splits"
            if summary.tolerated_split_seeds
            else ""
        )
        + (f"  [{wall:.1f}s wall]" if wall is not None else "")
    )
    click.echo(
        f"  time to decision   p50 {fmt_seconds(summary.p50)}  p99 {fmt_seconds(summary.p99)}"
        f"  max {fmt_seconds(summary.max)}"
    )
    click.echo(
        f"  first decision     p50 {fmt_seconds(summary.first_p50)}"
        f"  p99 {fmt_seconds(summary.first_p99)}"
    )
    click.echo(f"  messages/node/s    {summary.messages_per_node_second:.3f}")
    if summary.multi_init_seeds:
        click.echo(f"  seeds with more than one cluster-init: {summary.multi_init_seeds}")
    if summary.late_join_max is not None or summary.late_undecided:
        click.echo(
            f"  late joiners       slowest {fmt_seconds(summary.late_join_max)}, "
            f"{summary.late_undecided} never decided"
        )
    if summary.notes:
        click.echo("  notes              " + ", ".join(f"{k}={v}" for k, v in summary.notes))
    for seed, finding, command in summary.violating:
        click.echo(f"  VIOLATION seed {seed}: {finding}", err=True)
        click.echo(f"    reproduce: {command}", err=True)


def _print_nodes(result: RunResult) -> None:
    click.echo(
        f"  seed {result.seed}: trace {result.trace_hash[:16]}, {result.events} events,"
        f" ended at {result.end_time:.3f}s, start {result.start:.3f}s"
    )
    for node in result.nodes:
        decided = (
            f"{node.decided_role} of {node.decision} at {node.decided_at:.3f}s"
            if node.decision is not None and node.decided_at is not None
            else "undecided"
        )
        state = "up" if node.up else "down"
        boot = "never booted" if node.first_boot is None else f"booted {node.first_boot:.3f}s"
        click.echo(
            f"    {node.name:>5} {node.role:<6} {node.node_id[:8]} {state:<4} {boot:<17} {decided}"
        )


def _hash_in_subprocess(
    scenario: scenarios.Scenario, seed: int, algorithm: str, hash_seed: str, codec: bool
) -> str:
    command = [
        sys.executable,
        "-m",
        "sim",
        "run",
        scenarios.command_name(scenario),
        "--seed",
        str(seed),
        "--algorithm",
        algorithm,
        "--print-hash",
    ]
    for override in scenario.overrides:
        command += ["--set", override]
    if codec:
        command.append("--codec")
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 1):
        raise click.ClickException(f"determinism check run failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


@click.group()
def main() -> None:
    """Deterministic simulator of rancherd fleets (gossip vs the classic election)."""


@main.command()
@click.argument("scenario")
@click.option(
    "--seeds",
    "count",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of seeds to run, starting at --seed.",
)
@click.option("--seed", "first", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--algorithm", type=click.Choice(ALGORITHM_CHOICES), default="gossip", show_default=True
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a scenario key, e.g. --set discovery.loss=0.3 (repeatable).",
)
@click.option(
    "--jobs",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes (0: one per CPU); results stay in seed order.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--per-seed", is_flag=True, help="With --json, include every seed's result.")
@click.option(
    "--check-determinism",
    is_flag=True,
    help="Run each seed again in two fresh interpreters with different "
    "PYTHONHASHSEED and compare trace hashes.",
)
@click.option("--trace", is_flag=True, help="Print every delivered event (one seed).")
@click.option("--codec", is_flag=True, help="Gossip: encode/decode every message.")
@click.option("--print-hash", is_flag=True, hidden=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--mutant",
    default=None,
    metavar="NAME",
    help="Plant one of the bugs of `python -m sim mutants` (gossip; runs in this process).",
)
@click.option("--no-audit", is_flag=True, help="Only the decision invariants (no sim/audit.py).")
def run(
    scenario: str,
    count: int,
    first: int,
    algorithm: str,
    overrides: tuple[str, ...],
    jobs: int,
    as_json: bool,
    per_seed: bool,
    check_determinism: bool,
    trace: bool,
    codec: bool,
    print_hash: bool,
    quiet: bool,
    mutant: str | None,
    no_audit: bool,
) -> None:
    """Run SCENARIO (a name under sim/scenarios/ or a path) for one or more seeds."""
    if mutant is not None or no_audit:
        _run_planted(scenario, overrides, range(first, first + count), mutant, not no_audit)
        return
    loaded = _load(scenario, overrides)
    seeds = list(range(first, first + count))
    if print_hash:
        for name in _algorithms(algorithm):
            for seed in seeds:
                click.echo(World(loaded, seed, name, codec=codec).run().trace_hash)
        return
    summaries: list[dict[str, Any]] = []
    failed = False
    for name in _algorithms(algorithm):
        if trace:

            def show(record: TraceRecord) -> None:
                click.echo(" ".join(str(part) for part in record))

            results = [World(loaded, seed, name, trace=show, codec=codec).run() for seed in seeds]
        else:
            progress = Progress(
                len(seeds), f"{loaded.name}/{name}", enabled=not quiet and len(seeds) > 1
            )
            started = time.monotonic()
            results = run_many(
                loaded,
                seeds,
                name,
                jobs=_jobs(jobs),
                codec=codec,
                keep_nodes=len(seeds) == 1,
                on_result=progress.advance_one,
            )
            progress.finish()
            wall = time.monotonic() - started
        summary = summarize(results)
        failed |= summary.violations > 0
        entry = summary.as_json()
        if per_seed:
            entry["per_seed"] = [_result_json(r) for r in results]
        if check_determinism:
            entry["determinism"] = checks = _determinism(loaded, results, name, codec)
            failed |= not all(check["agree"] for check in checks)
        summaries.append(entry)
        if not as_json:
            _print_summary(summary, None if trace else wall)
            if len(seeds) == 1 and results[0].nodes:
                _print_nodes(results[0])
            for check in entry.get("determinism", []):
                verdict = "same" if check["agree"] else "DIFFERENT"
                click.echo(
                    f"  determinism seed {check['seed']}: {verdict} trace hash in 3 runs "
                    f"({', '.join(h[:12] for h in check['hashes'])})"
                )
    if as_json:
        click.echo(json.dumps({"summaries": summaries}, indent=2))
    if failed:
        sys.exit(1)


def _determinism(
    loaded: scenarios.Scenario, results: Sequence[RunResult], name: str, codec: bool
) -> list[dict[str, Any]]:
    """Each seed's trace hash here and in two fresh interpreters (other hash seeds)."""
    checks: list[dict[str, Any]] = []
    for result in results:
        hashes = [result.trace_hash] + [
            _hash_in_subprocess(loaded, result.seed, name, hash_seed, codec)
            for hash_seed in ("1", "2")
        ]
        checks.append({"seed": result.seed, "hashes": hashes, "agree": len(set(hashes)) == 1})
    return checks


def _run_planted(
    scenario: str, overrides: Sequence[str], seeds: range, mutant: str | None, audit: bool
) -> None:
    """``run --mutant``/``--no-audit``: gossip, one process, a line per violating seed."""
    from sim.mutants import planted

    loaded = _load(scenario, overrides)
    plant = contextlib.nullcontext() if mutant is None else planted(_known_mutant(mutant))
    flags = ([] if mutant is None else ["--mutant", mutant]) + ([] if audit else ["--no-audit"])
    with plant:
        results = [
            dataclasses.replace(r, reproduce=shlex.join([*shlex.split(r.reproduce), *flags]))
            for r in (run_seed(loaded, seed, "gossip", audit=audit) for seed in seeds)
        ]
    _print_summary(summarize(results))
    if any(r.violations for r in results):
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the score as JSON.")
@click.option(
    "--no-audit",
    is_flag=True,
    help="Count only the decision invariants (two inits, disagreement, ...), not the "
    "election's own rules of sim/audit.py.",
)
@click.option("--mutant", "names", multiple=True, metavar="NAME", help="Only these (repeatable).")
def mutants(as_json: bool, no_audit: bool, names: tuple[str, ...]) -> None:
    """Plant each known election bug in turn and check that the simulator catches it.

    Exit status 1 when a mutant is missed or the unmutated runs report a violation."""
    from sim.mutants import MUTANTS, score

    chosen = [_known_mutant(n) for n in names] if names else list(MUTANTS)
    result = score(chosen, audit=not no_audit)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"{result['caught']} of {result['mutants']} mutants caught "
            f"({result['runs']} runs per mutant at most)"
        )
        for catch in result["catches"]:
            found = catch["caught_by"] or "MISSED"
            click.echo(f"  {catch['mutant']:<22} after {catch['runs']:>3} runs: {found}")
        for line in result["baseline_violations"]:
            click.echo(f"  unmutated: {line}")
    if result["missed"] or result["baseline_violations"]:
        sys.exit(1)


def _known_mutant(name: str) -> Mutant:
    """The mutant called ``name``; an unknown name is a usage error."""
    from sim.mutants import by_name

    try:
        return by_name(name)
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None


def _result_json(result: RunResult) -> dict[str, Any]:
    return {
        "seed": result.seed,
        "decided": result.decided,
        "time_to_decision": result.time_to_decision,
        "first_decision_at": result.first_decision_at,
        "start": result.start,
        "messages_per_node_second": result.messages_per_node_second,
        "clusters": result.clusters,
        "init_identities": result.init_identities,
        "violations": list(result.violations),
        "tolerated": list(result.tolerated),
        "trace_hash": result.trace_hash,
        "reproduce": result.reproduce,
    }


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not items:
            raise click.BadParameter(f"{spec!r}: expected KEY=V1,V2,...", param_hint="--grid")
        axes.append((key.strip(), items))
    return axes


def grid_cells(axes: Sequence[tuple[str, list[str]]]) -> list[tuple[str, ...]]:
    """Every combination, as override strings, first axis slowest."""
    return [
        tuple(f"{key}={value}" for (key, _), value in zip(axes, combo, strict=True))
        for combo in itertools.product(*(values for _, values in axes))
    ]


@main.command()
@click.argument("scenario")
@click.option(
    "--grid",
    "grids",
    multiple=True,
    required=True,
    metavar="KEY=V1,V2,...",
    help="A parameter axis, e.g. --grid discovery.loss=0,0.3,0.6,0.9 (repeatable).",
)
@click.option("--seeds", "count", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", "first", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--algorithm", type=click.Choice(ALGORITHM_CHOICES), default="both", show_default=True
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--jobs", type=int, default=0, show_default=True, help="0: one per CPU.")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON to this file.",
)
@click.option("--quiet", is_flag=True)
def sweep(
    scenario: str,
    grids: tuple[str, ...],
    count: int,
    first: int,
    algorithm: str,
    overrides: tuple[str, ...],
    jobs: int,
    as_json: bool,
    out: Path | None,
    quiet: bool,
) -> None:
    """Run SCENARIO over a grid of parameters, every cell for --seeds seeds."""
    axes = parse_grid(grids)
    cells = grid_cells(axes)
    names = _algorithms(algorithm)
    loaded = [_load(scenario, (*overrides, *cell)) for cell in cells]
    seeds = list(range(first, first + count))
    progress = Progress(len(cells) * len(names) * count, f"sweep {scenario}", enabled=not quiet)
    rows: list[dict[str, Any]] = []
    failed = False
    for cell, cell_scenario in zip(cells, loaded, strict=True):
        for name in names:
            results = run_many(
                cell_scenario,
                seeds,
                name,
                jobs=_jobs(jobs),
                on_result=progress.advance_one,
            )
            summary = summarize(results)
            failed |= summary.violations > 0
            params = dict(item.split("=", 1) for item in cell)
            rows.append({"params": params, **summary.as_json()})
    progress.finish()
    document = {
        "scenario": scenario,
        "grid": [{"key": k, "values": v} for k, v in axes],
        "overrides": list(overrides),
        "cells": rows,
    }
    if out is not None:
        out.write_text(json.dumps(document, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        keys = [key for key, _ in axes]
        header = [*keys, "algorithm", "decided", "viol", "p50", "p99", "max", "msg/n/s"]
        click.echo("  ".join(f"{h:>12}" for h in header))
        for row in rows:
            ttd = row["time_to_decision"]
            values = [
                *(row["params"][k] for k in keys),
                row["algorithm"],
                f"{row['seeds_decided']}/{row['seeds']}",
                str(row["violations"]),
                _cell(ttd["p50"]),
                _cell(ttd["p99"]),
                _cell(ttd["max"]),
                f"{row['messages_per_node_per_second']:.2f}",
            ]
            click.echo("  ".join(f"{v:>12}" for v in values))
        for row in rows:
            for item in row["violating"]:
                click.echo(
                    f"VIOLATION: {item['finding']}\n  reproduce: {item['reproduce']}", err=True
                )
    if failed:
        sys.exit(1)


def _cell(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


@main.command()
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--seeds",
    "count",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Seeds per scenario and per cell.",
)
@click.option("--jobs", type=int, default=0, show_default=True, help="0: one per CPU.")
@click.option("--quiet", is_flag=True)
def report(outdir: Path, count: int, jobs: int, quiet: bool) -> None:
    """Run the standard experiments and write OUTDIR/report.md with PNG plots."""
    from sim.report import write_report

    path = write_report(outdir, seeds=count, jobs=_jobs(jobs), progress=not quiet)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--nodes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--servers", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--virtual-seconds", type=click.FloatRange(min=1), default=60.0, show_default=True)
@click.option(
    "--algorithm", type=click.Choice(list(ALGORITHMS)), default="gossip", show_default=True
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def bench(nodes: int, servers: int, virtual_seconds: float, algorithm: str, seed: int) -> None:
    """Time one big run: NODES nodes (SERVERS of them servers) for VIRTUAL-SECONDS."""
    from sim.bench import run_bench

    outcome = run_bench(
        nodes=nodes,
        servers=servers,
        virtual_seconds=virtual_seconds,
        algorithm=algorithm,
        seed=seed,
    )
    click.echo(outcome.describe())


@main.command(name="list")
def list_scenarios() -> None:
    """List the built-in scenarios."""
    for name in scenarios.scenario_names():
        loaded = _load(name, ())
        click.echo(f"{name:<24} {loaded.description}")


@main.command()
@click.argument("files", nargs=-1)
def validate(files: tuple[str, ...]) -> None:
    """Validate scenario files (all built-in ones when none are given)."""
    problems = 0
    for name in files or tuple(scenarios.scenario_names()):
        try:
            scenarios.load(name)
        except scenarios.ScenarioError as exc:
            problems += 1
            click.echo("\n".join(exc.errors), err=True)
        else:
            click.echo(f"ok {name}")
    if problems:
        sys.exit(2)
