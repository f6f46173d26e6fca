"""Throughput, latency and enqueue rates of obsjobs, procrastinate and SAQ on PostgreSQL.

One process, one server, the same worker concurrency for every library. Each round
runs, in an order that rotates by one each round:

1. throughput: seed N no-op jobs, start a worker, and time until the N-th job body
   has run. A floor in bare psycopg 3 claims and completes rows 100 at a time;
2. enqueue-to-start latency on an idle in-process worker, one job at a time;
3. enqueue rate one job at a time.

Every run gets a new scratch schema, dropped afterwards. The output is a table on
standard output and ``bench/results/pg.json``, and docs/benchmarks.md explains the figures.
Run it with the benchmark's own virtual environment, where the peers are installed::

    /work/bench-venv/bin/python bench/pg_throughput.py [--jobs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog
from memory_throughput import Telemetry, percentile
from pg_common import DEFAULT_CONNINFO, Contender, ThroughputRun, Timing
from pg_environment import describe_environment
from pg_floor import CLAIM_BATCH, floor_throughput
from pg_obsjobs import BULK_BATCH, ObsjobsContender
from pg_peers import ProcrastinateContender, SaqContender

RESULTS_PATH = Path(__file__).parent / "results" / "pg.json"
TARGETS = {
    "obsjobs >= 10x procrastinate": ("obsjobs", "procrastinate", 10.0),
    "obsjobs >= 3x SAQ": ("obsjobs", "saq", 3.0),
    "obsjobs >= 10% of the floor": ("obsjobs", "floor", 0.10),
}
"""Throughput targets: (numerator, denominator, minimum ratio of drain rates)."""


class FloorContender:
    """Adapter that lets the round runner drive the bare psycopg floor like a library."""

    key = "floor"
    label = f"floor: bare psycopg, {CLAIM_BATCH} per claim"

    async def throughput(self, conninfo: str, jobs: int) -> ThroughputRun:
        """Run :func:`pg_floor.floor_throughput`."""
        return await floor_throughput(conninfo, jobs)


Runner = Callable[[], Coroutine[Any, Any, Any]]


def run_rotated(
    round_index: int, contenders: Sequence[Any], measure: Callable[[Any], Runner]
) -> dict[str, Any]:
    """Run ``measure(contender)`` for each contender, starting at ``round_index`` mod len.

    Each run gets a new event loop and a garbage collection before it starts.
    """
    shift = round_index % len(contenders)
    results: dict[str, Any] = {}
    for contender in [*contenders[shift:], *contenders[:shift]]:
        gc.collect()
        results[contender.key] = asyncio.run(measure(contender)())
    return results


def run_rounds(arguments: argparse.Namespace, telemetry: Telemetry) -> dict[str, Any]:
    """Warm up once, then run every measurement for every contender in each round."""
    conninfo, jobs, concurrency = arguments.conninfo, arguments.jobs, arguments.concurrency
    libraries: list[Contender] = [
        ObsjobsContender(telemetry, concurrency),
        ProcrastinateContender(concurrency),
        SaqContender(concurrency),
    ]
    drainers: list[Any] = [FloorContender(), *libraries]

    warm_jobs = max(jobs // 10, 100)
    run_rotated(0, drainers, lambda c: lambda: c.throughput(conninfo, warm_jobs))
    run_rotated(0, libraries, lambda c: lambda: c.latency(conninfo, 10))

    rounds: list[dict[str, Any]] = []
    for index in range(arguments.rounds):
        # Flush first, so that spans of earlier runs are not counted as this round's.
        telemetry.provider.force_flush()
        spans_before = telemetry.mark()
        throughput = run_rotated(index, drainers, lambda c: lambda: c.throughput(conninfo, jobs))
        spans = telemetry.since(spans_before)
        latency = run_rotated(
            index, libraries, lambda c: lambda: c.latency(conninfo, arguments.latency_samples)
        )
        single = run_rotated(
            index, libraries, lambda c: lambda: c.single_enqueue(conninfo, arguments.enqueue_jobs)
        )
        rounds.append(
            {"throughput": throughput, "latency": latency, "single": single, "spans": spans}
        )
        print(f"round {index + 1}/{arguments.rounds} done", file=sys.stderr)
    return {"rounds": rounds, "labels": {c.key: c.label for c in drainers}}


def _timing_record(timing: Timing) -> dict[str, float]:
    return {
        "jobs_per_s": round(timing.rate, 1),
        "seconds": round(timing.seconds, 4),
        "cpu_us_per_job": round(timing.cpu_seconds / timing.jobs * 1e6, 1),
    }


def _median_record(timings: list[Timing]) -> dict[str, Any]:
    return {
        "per_round_jobs_per_s": [round(timing.rate, 1) for timing in timings],
        "median_jobs_per_s": round(statistics.median(t.rate for t in timings), 1),
        "median_cpu_us_per_job": round(
            statistics.median(t.cpu_seconds / t.jobs for t in timings) * 1e6, 1
        ),
    }


def _latency_summary(per_round: list[list[float]]) -> dict[str, Any]:
    """Return each round's p50 and p99 in ms, their medians, and the maximum of all samples."""
    p50 = [percentile(samples, 0.50) for samples in per_round]
    p99 = [percentile(samples, 0.99) for samples in per_round]
    return {
        "samples_per_round": len(per_round[0]),
        "per_round_p50_ms": [round(value * 1e3, 2) for value in p50],
        "per_round_p99_ms": [round(value * 1e3, 2) for value in p99],
        "median_p50_ms": round(statistics.median(p50) * 1e3, 2),
        "median_p99_ms": round(statistics.median(p99) * 1e3, 2),
        "pooled_max_ms": round(max(max(samples) for samples in per_round) * 1e3, 2),
    }


def _target_verdicts(drain: dict[str, list[Timing]]) -> dict[str, Any]:
    """Compare per-round drain-rate ratios with :data:`TARGETS`, by their median."""
    verdicts = {}
    for name, (top, bottom, minimum) in TARGETS.items():
        ratios = [a.rate / b.rate for a, b in zip(drain[top], drain[bottom], strict=True)]
        median = statistics.median(ratios)
        verdicts[name] = {
            "per_round": [round(ratio, 3) for ratio in ratios],
            "median": round(median, 3),
            "met": median >= minimum,
        }
    return verdicts


def summarise(measured: dict[str, Any]) -> dict[str, Any]:
    """Return per-round figures, medians over the rounds, ratios and target verdicts."""
    rounds, labels = measured["rounds"], measured["labels"]
    runs = {key: [r["throughput"][key] for r in rounds] for key in labels}
    drain = {key: [run.drain for run in runs[key]] for key in labels}

    throughput = {
        key: {
            "label": labels[key],
            "drain": _median_record(drain[key]),
            "seed": _median_record([run.seed for run in runs[key]]),
            "ack_lag_ms_per_round": [round(run.ack_lag_s * 1e3, 1) for run in runs[key]],
            "per_round_raw": [
                {"seed": _timing_record(run.seed), "drain": _timing_record(run.drain)}
                for run in runs[key]
            ],
        }
        for key in labels
    }
    latency = {
        key: _latency_summary([r["latency"][key] for r in rounds]) for key in rounds[0]["latency"]
    }
    single = {
        key: _median_record([r["single"][key] for r in rounds]) for key in rounds[0]["single"]
    }

    return {
        "throughput": throughput,
        "latency": latency,
        "single_enqueue": single,
        "targets": _target_verdicts(drain),
        "obsjobs_spans_per_round": [
            {"exported": r["spans"][0], "dropped": r["spans"][1]} for r in rounds
        ],
    }


def print_report(summary: dict[str, Any]) -> None:
    """Print the throughput, latency and enqueue tables and the target verdicts."""
    print(f"{'drain (jobs/s)':40} {'median':>8} {'cpu us':>8}  per round")
    for figures in summary["throughput"].values():
        drain = figures["drain"]
        print(
            f"{figures['label']:40} {drain['median_jobs_per_s']:>8} "
            f"{drain['median_cpu_us_per_job']:>8}  {drain['per_round_jobs_per_s']}"
        )
    print(f"\n{'seed (jobs/s)':40} {'median':>8}  per round")
    for figures in summary["throughput"].values():
        seed = figures["seed"]
        print(
            f"{figures['label']:40} {seed['median_jobs_per_s']:>8}  {seed['per_round_jobs_per_s']}"
        )
    print(f"\n{'enqueue one at a time (jobs/s)':40} {'median':>8}  per round")
    for key, figures in summary["single_enqueue"].items():
        print(f"{key:40} {figures['median_jobs_per_s']:>8}  {figures['per_round_jobs_per_s']}")
    print(f"\n{'enqueue-to-start latency (ms)':40} {'p50':>8} {'p99':>8} {'max':>8}")
    for key, figures in summary["latency"].items():
        print(
            f"{key:40} {figures['median_p50_ms']:>8} {figures['median_p99_ms']:>8} "
            f"{figures['pooled_max_ms']:>8}"
        )
    print()
    for name, verdict in summary["targets"].items():
        met = "met" if verdict["met"] else "MISSED"
        print(f"{name:40} {verdict['median']:>8}  {met}  per round {verdict['per_round']}")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conninfo", default=DEFAULT_CONNINFO, help="libpq connection string")
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency")
    parser.add_argument(
        "--latency-samples", type=int, default=200, help="latency samples per library and round"
    )
    parser.add_argument(
        "--enqueue-jobs", type=int, default=1_000, help="jobs per one-at-a-time enqueue run"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    arguments = parser.parse_args(argv)
    for name in ("jobs", "rounds", "concurrency", "latency_samples", "enqueue_jobs"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    if arguments.rounds < 2:
        parser.error("--rounds must be at least 2, so that every figure is a median of rounds")
    return arguments


def configure_logging() -> None:
    """Drop every library's per-job log events at the call, as a production service would.

    obsjobs logs per-job events at DEBUG through structlog, filtered at INFO here, and
    its start and stop events go to /dev/null. procrastinate and SAQ log per-job events at
    INFO through the standard library, whose root logger stays at its WARNING default.
    """
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(open(os.devnull, "w")),  # noqa: SIM115
    )
    logging.basicConfig(level=logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the tables and write the JSON results."""
    arguments = parse_arguments(argv)
    configure_logging()
    telemetry = Telemetry.create()
    environment = asyncio.run(describe_environment(arguments.conninfo))
    started = time.perf_counter()
    measured = run_rounds(arguments, telemetry)
    summary = summarise(measured)
    environment["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    environment["total_seconds"] = round(time.perf_counter() - started, 1)
    print_report(summary)
    print(f"\ntotal {environment['total_seconds']} s", file=sys.stderr)

    settings = {key: value for key, value in vars(arguments).items() if key != "output"}
    settings.update(obsjobs_bulk_batch=BULK_BATCH, floor_claim_batch=CLAIM_BATCH)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "settings": settings,
        "environment": environment,
        **summary,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    telemetry.provider.shutdown()


if __name__ == "__main__":
    main()
