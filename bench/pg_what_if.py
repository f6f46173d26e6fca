"""Estimate what limits obsjobs' drain rate on PostgreSQL, by turning parts off or changing them.

Runs the obsjobs throughput run of ``bench/pg_throughput.py`` in these variants,
interleaved over rounds, and prints the median drain rate and CPU time per job:

- as benchmarked: metrics and tracing;
- metrics without tracing, and neither;
- as benchmarked, with the result written after the job's concurrency slot is freed;
- as benchmarked, with the success UPDATE committed asynchronously;
- as benchmarked, with both changes.

The last three patch obsjobs internals in this process only (``Worker._conclude`` and
the success statement of ``postgres_sql``), to estimate the gain of changes suggested
in docs/benchmarks.md before anyone makes them. NOTE: the patches follow the code of
obsjobs at the commit the docs name, and may fail or mislead once those internals
change. The library files are not modified.

Usage::

    /work/bench-venv/bin/python bench/pg_what_if.py [--jobs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from memory_throughput import Telemetry
from pg_common import DEFAULT_CONNINFO, Timing
from pg_obsjobs import ObsjobsContender
from pg_throughput import configure_logging
from psycopg import sql

from obsjobs import worker as worker_module
from obsjobs.protocols import JobRecord, JobResult
from obsjobs.providers import postgres_sql

_ASYNC_SUCCEED = sql.SQL(
    """
WITH relaxed AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
)
UPDATE {jobs} AS j
SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS done(id, token), relaxed
WHERE j.id = done.id AND j.lease_token = done.token AND j.state = 'running'
RETURNING j.id
"""
)


@contextlib.contextmanager
def ack_after_slot_freed() -> Iterator[None]:
    """Report each result from a background task, so the job's slot frees when perform ends.

    The result is still written and awaited, but by a task the worker does not count
    against its concurrency. The benchmark waits for every row to be stored as succeeded
    before it stops the engine, so no result is lost in this experiment.
    """
    original = worker_module.Worker._conclude
    reporting: set[asyncio.Task[None]] = set()

    async def conclude(
        self: worker_module.Worker, job: JobRecord, result: JobResult, cancelled: bool
    ) -> None:
        if cancelled:
            await original(self, job, result, cancelled)
            return
        task = asyncio.create_task(self._report(job, result))
        reporting.add(task)
        task.add_done_callback(reporting.discard)

    worker_module.Worker._conclude = conclude  # type: ignore[method-assign]
    try:
        yield
    finally:
        worker_module.Worker._conclude = original  # type: ignore[method-assign]


@contextlib.contextmanager
def asynchronous_success_commit() -> Iterator[None]:
    """Commit the batched success UPDATE with ``synchronous_commit`` off, as claims are."""
    original = postgres_sql._SUCCEED
    postgres_sql._SUCCEED = _ASYNC_SUCCEED  # type: ignore[misc]
    try:
        yield
    finally:
        postgres_sql._SUCCEED = original  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Variant:
    """One configuration of obsjobs: telemetry switches and in-process patches."""

    label: str
    metrics: bool = True
    tracing: bool = True
    early_ack: bool = False
    async_success: bool = False


VARIANTS = (
    Variant("as benchmarked (metrics+tracing)"),
    Variant("metrics, no tracing", tracing=False),
    Variant("telemetry off", metrics=False, tracing=False),
    Variant("as benchmarked + ack after slot freed", early_ack=True),
    Variant("as benchmarked + async success commit", async_success=True),
    Variant("as benchmarked + both changes", early_ack=True, async_success=True),
)


def run_variant(
    variant: Variant, telemetry: Telemetry, conninfo: str, jobs: int, concurrency: int
) -> Timing:
    """Run one throughput run of ``variant`` in a new event loop and return its drain."""
    contender = ObsjobsContender(
        telemetry if variant.tracing else None, concurrency, metrics=variant.metrics
    )
    with contextlib.ExitStack() as patches:
        if variant.early_ack:
            patches.enter_context(ack_after_slot_freed())
        if variant.async_success:
            patches.enter_context(asynchronous_success_commit())
        gc.collect()
        return asyncio.run(contender.throughput(conninfo, jobs)).drain


def main(argv: Sequence[str] | None = None) -> None:
    """Run every variant once per round, rotating the order, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conninfo", default=DEFAULT_CONNINFO, help="libpq connection string")
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency")
    arguments = parser.parse_args(argv)
    if min(arguments.jobs, arguments.rounds, arguments.concurrency) < 1:
        parser.error("--jobs, --rounds and --concurrency must be positive integers")
    configure_logging()
    telemetry = Telemetry.create()
    timings: dict[str, list[Timing]] = {variant.label: [] for variant in VARIANTS}
    for round_index in range(arguments.rounds):
        shift = round_index % len(VARIANTS)
        for variant in (*VARIANTS[shift:], *VARIANTS[:shift]):
            timing = run_variant(
                variant, telemetry, arguments.conninfo, arguments.jobs, arguments.concurrency
            )
            timings[variant.label].append(timing)
    print(f"{'variant':42} {'jobs/s':>8} {'cpu us':>7}  per round (jobs/s)")
    for label, runs in timings.items():
        rates = [round(run.rate) for run in runs]
        cpu_us = statistics.median(run.cpu_seconds / run.jobs for run in runs) * 1e6
        print(f"{label:42} {statistics.median(rates):>8.0f} {cpu_us:>7.1f}  {rates}")
    telemetry.provider.shutdown()


if __name__ == "__main__":
    main()
