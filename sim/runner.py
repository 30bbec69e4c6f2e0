"""Many seeds: run them (optionally in worker processes) and summarize.

Worker processes only change how fast the answer comes, never the answer: each seed is an
independent run from ``(scenario, seed, algorithm)``, and results are returned in seed
order (``Pool.imap``), whatever the number of workers.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sim.scenario import Scenario
from sim.world import RunResult, run_seed

MAX_REPRODUCE = 10


def _run_one(args: tuple[Scenario, int, str, bool, bool]) -> RunResult:
    scenario, seed, algorithm, codec, keep_nodes = args
    result = run_seed(scenario, seed, algorithm, codec=codec)
    return result if keep_nodes else replace(result, nodes=())


def run_many(
    scenario: Scenario,
    seeds: Sequence[int],
    algorithm: str,
    *,
    jobs: int = 1,
    codec: bool = False,
    keep_nodes: bool = False,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    tasks = [(scenario, seed, algorithm, codec, keep_nodes) for seed in seeds]
    results: list[RunResult] = []
    iterator: Iterator[RunResult]
    if jobs <= 1 or len(tasks) <= 1:
        iterator = map(_run_one, tasks)
        for result in iterator:
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(64, len(tasks) // (jobs * 8)))
    with context.Pool(jobs) as pool:
        for result in pool.imap(_run_one, tasks, chunksize=chunk):
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); ``inf`` stands for "never decided"."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _finite(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 6)


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: str
    algorithm: str
    seeds: int
    first_seed: int
    seeds_decided: int
    violations: int
    """Seeds that broke an invariant (each run stops at its first violation)."""
    violating: tuple[tuple[int, str, str], ...]
    """(seed, first finding, reproduce command) of the first few violating seeds."""
    undecided: tuple[tuple[int, str], ...]
    """(seed, reproduce command) of the first few seeds that never decided."""
    tolerated_split_seeds: int
    multi_init_seeds: int
    """Seeds in which more than one identity became cluster-init (violating or tolerated)."""
    p50: float
    p99: float
    max: float
    first_p50: float
    first_p99: float
    messages_per_node_second: float
    late_join_max: float | None
    late_undecided: int
    notes: tuple[tuple[str, int], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "algorithm": self.algorithm,
            "seeds": self.seeds,
            "first_seed": self.first_seed,
            "seeds_decided": self.seeds_decided,
            "violations": self.violations,
            "violating": [
                {"seed": seed, "finding": finding, "reproduce": command}
                for seed, finding, command in self.violating
            ],
            "undecided": [{"seed": seed, "reproduce": command} for seed, command in self.undecided],
            "tolerated_split_seeds": self.tolerated_split_seeds,
            "multi_init_seeds": self.multi_init_seeds,
            "time_to_decision": {
                "p50": _finite(self.p50),
                "p99": _finite(self.p99),
                "max": _finite(self.max),
                "note": "seconds; null = not every seed in that rank decided",
            },
            "time_to_first_decision": {
                "p50": _finite(self.first_p50),
                "p99": _finite(self.first_p99),
            },
            "messages_per_node_per_second": round(self.messages_per_node_second, 6),
            "late_join_max": None if self.late_join_max is None else round(self.late_join_max, 6),
            "late_undecided": self.late_undecided,
            "notes": dict(self.notes),
        }


def summarize(results: Sequence[RunResult]) -> Summary:
    if not results:
        raise ValueError("no results to summarize")
    inf = math.inf
    times = [r.time_to_decision if r.time_to_decision is not None else inf for r in results]
    firsts = [
        r.first_decision_at - r.start if r.first_decision_at is not None else inf for r in results
    ]
    firsts = [max(0.0, f) for f in firsts]
    violating = [r for r in results if r.violations]
    notes: dict[str, int] = {}
    for r in results:
        for key, count in r.notes:
            notes[key] = notes.get(key, 0) + count
    late = [r.late_join_max for r in results if r.late_join_max is not None]
    return Summary(
        scenario=results[0].scenario,
        algorithm=results[0].algorithm,
        seeds=len(results),
        first_seed=results[0].seed,
        seeds_decided=sum(r.decided for r in results),
        violations=len(violating),
        violating=tuple((r.seed, r.violations[0], r.reproduce) for r in violating[:MAX_REPRODUCE]),
        undecided=tuple((r.seed, r.reproduce) for r in results if not r.decided)[:MAX_REPRODUCE],
        tolerated_split_seeds=sum(bool(r.tolerated) for r in results),
        multi_init_seeds=sum(r.init_identities > 1 for r in results),
        p50=percentile(times, 0.5),
        p99=percentile(times, 0.99),
        max=max(times),
        first_p50=percentile(firsts, 0.5),
        first_p99=percentile(firsts, 0.99),
        messages_per_node_second=sum(r.messages_per_node_second for r in results) / len(results),
        late_join_max=max(late) if late else None,
        late_undecided=sum(r.late_undecided for r in results),
        notes=tuple(sorted(notes.items())),
    )


def fmt_seconds(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "never"
    if math.isnan(value):
        return "-"
    return f"{value:.2f}s"
