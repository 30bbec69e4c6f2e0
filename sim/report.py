"""``python -m sim report OUTDIR``: the standard experiments, as markdown and PNG plots.

Experiments (every one for each algorithm that can run; gossip is skipped with a note
while ``GossipCore`` is not implemented):

1. CDF of time to decision (and of time to the first decision) on ``happy-n3`` and
   ``mdns-loss-30``;
2. heatmaps of the median and p99 time to decision over mDNS loss x
   ``serverCacheDuration`` on ``happy-n3``;
3. messages per node per second against N (``happy-n1`` .. ``happy-n7``);
4. safety and liveness per scenario: violating seeds, seeds with more than one
   cluster-init, seeds decided, for every built-in scenario.

Everything goes through the same ``run_many`` as ``python -m sim run``, so each figure is
reproducible from the commands listed in the report.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim import scenario as scenarios
from sim.progress import Progress
from sim.runner import Summary, fmt_seconds, percentile, run_many, summarize
from sim.world import RunResult

CDF_SCENARIOS = ("happy-n3", "mdns-loss-30")
HEATMAP_SCENARIO = "happy-n3"
HEATMAP_LOSS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
HEATMAP_CACHE = (10.0, 30.0, 60.0, 300.0)
SCALING = (
    ("happy-n1", 1),
    ("happy-n3", 3),
    ("happy-n5", 5),
    ("happy-n7", 7),
    ("happy-n10", 10),
    ("happy-n20", 20),
    ("happy-n50", 50),
)


@dataclass(frozen=True, slots=True)
class ReportPlan:
    seeds: int = 200
    heatmap_seeds: int = 100
    algorithms: tuple[str, ...] = ("gossip", "classic")
    cdf_scenarios: tuple[str, ...] = CDF_SCENARIOS
    heatmap_loss: tuple[float, ...] = HEATMAP_LOSS
    heatmap_cache: tuple[float, ...] = HEATMAP_CACHE
    scaling: tuple[tuple[str, int], ...] = SCALING
    safety_scenarios: tuple[str, ...] | None = None
    """``None``: every built-in scenario."""
    caps: tuple[tuple[str, int], ...] = (("agents-1000", 5), ("agents-100", 50))
    """Fewer seeds for the scenarios that cost a minute or more per gossip seed."""

    def seeds_for(self, name: str) -> int:
        return min(self.seeds, dict(self.caps).get(name, self.seeds))

    notes: tuple[str, ...] = field(default=())


def revision() -> str:
    """``git describe`` of the checkout the report ran from (``unknown`` outside git)."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def gossip_available() -> str | None:
    """``None`` when GossipCore runs; otherwise why not."""
    try:
        scenario = scenarios.load("happy-n3")
        from sim.world import run_seed

        run_seed(scenario, 0, "gossip")
    except NotImplementedError:
        return "GossipCore is not implemented yet (rancherd/gossip/core.py raises)"
    except Exception as exc:  # any failure of the core is a reason to skip, and to say so
        return f"GossipCore failed: {type(exc).__name__}: {exc}"
    return None


class _Runner:
    def __init__(self, jobs: int, progress: Progress) -> None:
        self.jobs = jobs
        self.progress = progress
        self.commands: list[str] = []

    def run(
        self, name: str, algorithm: str, seeds: int, overrides: Sequence[str] = ()
    ) -> list[RunResult]:
        scenario = scenarios.load(name, overrides)
        if not overrides:
            self.commands.append(
                f"python -m sim run {name} --algorithm {algorithm} --seeds {seeds}"
            )
        return run_many(
            scenario,
            list(range(seeds)),
            algorithm,
            jobs=self.jobs,
            on_result=self.progress.advance_one,
        )


def _pyplot() -> Any:
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    return plt


def _times(results: Sequence[RunResult]) -> list[float]:
    return [math.inf if r.time_to_decision is None else r.time_to_decision for r in results]


def _first_times(results: Sequence[RunResult]) -> list[float]:
    return [
        math.inf if r.first_decision_at is None else max(0.0, r.first_decision_at - r.start)
        for r in results
    ]


def _plot_cdf(plt: Any, path: Path, curves: dict[str, tuple[list[float], list[float]]]) -> None:
    """One colour per (scenario, algorithm): solid every node decided, dashed the first."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, (every, first)) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        for values, style, suffix in ((every, "-", ""), (first, "--", " (first decision)")):
            finite = sorted(v for v in values if math.isfinite(v))
            if not finite:
                continue
            xs = [finite[0], *finite]
            ys = [0.0, *((i + 1) / len(values) for i in range(len(finite)))]
            ax.step(xs, ys, style, where="post", color=colour, label=label + suffix)
    ax.set_xscale("log")
    ax.set_xlabel("seconds from the N-th server's boot (log scale)")
    ax.set_ylabel("fraction of seeds")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("CDF of time to decision (solid: every node; dashed: first decision)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_heatmaps(
    plt: Any,
    path: Path,
    algorithm: str,
    loss: Sequence[float],
    cache: Sequence[float],
    p50: list[list[float]],
    p99: list[list[float]],
) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, grid, title in ((axes[0], p50, "median"), (axes[1], p99, "p99")):
        finite = [v for row in grid for v in row if math.isfinite(v)]
        top = max(finite) if finite else 1.0
        shown = [[v if math.isfinite(v) else math.nan for v in row] for row in grid]
        cmap = plt.get_cmap("viridis").with_extremes(bad="lightgray")
        image = ax.imshow(shown, cmap=cmap, aspect="auto", origin="lower", vmin=0, vmax=top)
        ax.set_xticks(range(len(cache)), [f"{c:g}s" for c in cache])
        ax.set_yticks(range(len(loss)), [f"{int(x * 100)}%" for x in loss])
        ax.set_xlabel("serverCacheDuration")
        ax.set_ylabel("mDNS answer loss")
        ax.set_title(f"{algorithm}: {title} time to decision (s)")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                never = not math.isfinite(value)
                text = "never" if never else f"{value:.1f}"
                colour = "black" if never else "white"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_scaling(plt: Any, path: Path, series: dict[str, list[tuple[int, float]]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algorithm, points in series.items():
        ax.plot([n for n, _ in points], [v for _, v in points], "o-", label=algorithm)
    ax.set_xlabel("N (expectedServers = servers)")
    ax.set_ylabel("messages per node per second (until all decided)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_safety(
    plt: Any, path: Path, names: Sequence[str], counts: dict[str, list[int]], seeds: int
) -> None:
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / max(1, len(counts))
    for k, (algorithm, values) in enumerate(counts.items()):
        xs = [i + k * width for i in range(len(names))]
        ax.bar(xs, values, width=width, label=algorithm)
    ax.set_xticks(
        [i + width * (len(counts) - 1) / 2 for i in range(len(names))],
        names,
        rotation=60,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel(f"seeds with a safety violation (of {seeds})")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row(summary: Summary) -> str:
    return (
        f"| {summary.scenario} | {summary.algorithm} | {summary.seeds_decided}/{summary.seeds} "
        f"| {summary.violations} | {summary.multi_init_seeds} | {summary.tolerated_split_seeds} "
        f"| {fmt_seconds(summary.first_p50)} | {fmt_seconds(summary.p50)} "
        f"| {fmt_seconds(summary.p99)} | {fmt_seconds(summary.max)} "
        f"| {summary.messages_per_node_second:.2f} |"
    )


TABLE_HEAD = (
    "| scenario | algorithm | decided | violating seeds | >1 cluster-init | tolerated splits "
    "| first decision p50 | p50 | p99 | max | msg/node/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def write_report(
    outdir: Path, *, seeds: int, jobs: int, progress: bool, plan: ReportPlan | None = None
) -> Path:
    plan = plan or ReportPlan(seeds=seeds, heatmap_seeds=min(seeds, 100))
    plt = _pyplot()
    outdir.mkdir(parents=True, exist_ok=True)
    notes = list(plan.notes)
    algorithms = list(plan.algorithms)
    if "gossip" in algorithms:
        reason = gossip_available()
        if reason is not None:
            algorithms.remove("gossip")
            notes.append(f"gossip skipped: {reason}")
    safety_names = list(plan.safety_scenarios or scenarios.scenario_names())
    cells = len(plan.heatmap_loss) * len(plan.heatmap_cache)
    named = [*plan.cdf_scenarios, *(name for name, _ in plan.scaling), *safety_names]
    total = len(algorithms) * (
        sum(plan.seeds_for(name) for name in named) + plan.heatmap_seeds * cells
    )
    bar = Progress(total, "report", enabled=progress)
    runner = _Runner(jobs, bar)
    data: dict[str, Any] = {
        "seeds": plan.seeds,
        "heatmap_seeds": plan.heatmap_seeds,
        "algorithms": algorithms,
        "notes": notes,
    }
    cache_runs: dict[tuple[str, str], list[RunResult]] = {}

    def results_for(name: str, algorithm: str) -> list[RunResult]:
        key = (name, algorithm)
        if key not in cache_runs:
            cache_runs[key] = runner.run(name, algorithm, plan.seeds_for(name))
        else:
            bar.advance(plan.seeds_for(name))
        return cache_runs[key]

    # 1. CDFs.
    curves: dict[str, tuple[list[float], list[float]]] = {}
    cdf_rows: list[str] = []
    for name in plan.cdf_scenarios:
        for algorithm in algorithms:
            results = results_for(name, algorithm)
            curves[f"{name} {algorithm}"] = (_times(results), _first_times(results))
            cdf_rows.append(_row(summarize(results)))
    _plot_cdf(plt, outdir / "cdf_time_to_decision.png", curves)

    # 2. Heatmaps.
    heatmaps: dict[str, dict[str, list[list[float | None]]]] = {}
    for algorithm in algorithms:
        p50: list[list[float]] = []
        p99: list[list[float]] = []
        for loss in plan.heatmap_loss:
            row50: list[float] = []
            row99: list[float] = []
            for cache in plan.heatmap_cache:
                overrides = (f"discovery.loss={loss:g}", f"server_cache_duration={cache:g}")
                results = runner.run(HEATMAP_SCENARIO, algorithm, plan.heatmap_seeds, overrides)
                times = _times(results)
                row50.append(percentile(times, 0.5))
                row99.append(percentile(times, 0.99))
            p50.append(row50)
            p99.append(row99)
        _plot_heatmaps(
            plt,
            outdir / f"heatmap_{algorithm}.png",
            algorithm,
            plan.heatmap_loss,
            plan.heatmap_cache,
            p50,
            p99,
        )
        runner.commands.append(
            f"python -m sim sweep {HEATMAP_SCENARIO} --algorithm {algorithm} "
            f"--seeds {plan.heatmap_seeds} "
            f"--grid discovery.loss={','.join(f'{x:g}' for x in plan.heatmap_loss)} "
            f"--grid server_cache_duration={','.join(f'{c:g}' for c in plan.heatmap_cache)}"
        )
        heatmaps[algorithm] = {
            "p50": [[v if math.isfinite(v) else None for v in row] for row in p50],
            "p99": [[v if math.isfinite(v) else None for v in row] for row in p99],
        }
    data["heatmaps"] = {
        "loss": list(plan.heatmap_loss),
        "cache": list(plan.heatmap_cache),
        **heatmaps,
    }

    # 3. Messages per node per second against N.
    series: dict[str, list[tuple[int, float]]] = {}
    for algorithm in algorithms:
        series[algorithm] = [
            (n, summarize(results_for(name, algorithm)).messages_per_node_second)
            for name, n in plan.scaling
        ]
    _plot_scaling(plt, outdir / "messages_vs_n.png", series)
    data["messages_vs_n"] = series

    # 4. Safety and liveness per scenario.
    summaries: list[Summary] = []
    counts: dict[str, list[int]] = {a: [] for a in algorithms}
    for name in safety_names:
        for algorithm in algorithms:
            summary = summarize(results_for(name, algorithm))
            summaries.append(summary)
            counts[algorithm].append(summary.violations)
    bar.finish()
    _plot_safety(plt, outdir / "safety.png", safety_names, counts, plan.seeds)
    data["scenarios"] = [s.as_json() for s in summaries]
    (outdir / "results.json").write_text(json.dumps(data, indent=2) + "\n")

    lines = [
        "# rancherd simulation report",
        "",
        f"Made by `python -m sim report {outdir} --seeds {plan.seeds}` at revision `{revision()}`.",
        "",
        f"Seeds per scenario: {plan.seeds} (capped: "
        + ", ".join(f"{name} {cap}" for name, cap in plan.caps)
        + f"); per heatmap cell: {plan.heatmap_seeds}. "
        f"Algorithms: {', '.join(algorithms)}.",
        "Time to decision: from the boot of the N-th server to the first moment every live "
        "node holds a decision; first decision: to the first node's decision. See "
        "docs/SIMULATION.md.",
        "",
        *(f"> {note}" for note in notes),
        "",
        "## Time to decision",
        "",
        "![CDF](cdf_time_to_decision.png)",
        "",
        TABLE_HEAD,
        *cdf_rows,
        "",
        "## mDNS loss x serverCacheDuration",
        "",
        *(f"![{a}](heatmap_{a}.png)" for a in algorithms),
        "",
        "## Messages per node per second against N",
        "",
        "![messages](messages_vs_n.png)",
        "",
        "| N | " + " | ".join(algorithms) + " |",
        "|---|" + "---|" * len(algorithms),
        *(
            f"| {n} | " + " | ".join(f"{dict(series[a])[n]:.2f}" for a in algorithms) + " |"
            for _, n in plan.scaling
        ),
        "",
        "## Safety and liveness per scenario",
        "",
        "![safety](safety.png)",
        "",
        TABLE_HEAD,
        *(_row(s) for s in summaries),
        "",
        "Violating seeds (first few per scenario), each with the command that reproduces it:",
        "",
        *(
            f"- {s.scenario} / {s.algorithm} seed {seed}: {finding}  \n  `{command}`"
            for s in summaries
            for seed, finding, command in s.violating[:3]
        ),
        "",
        "## Commands",
        "",
        "Every figure above comes from these runs:",
        "",
        "```",
        *sorted(set(runner.commands)),
        "```",
        "",
    ]
    path = outdir / "report.md"
    path.write_text("\n".join(lines))
    return path
