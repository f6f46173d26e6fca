"""Count round trips per job for each library, and profile the obsjobs drain with cProfile.

Runs one throughput run per library (the same code as ``bench/pg_throughput.py``) with
a hook around the timed drain that counts the statements each library sends through
psycopg, grouped by their first words. Then runs obsjobs once more under cProfile and
prints the top functions by own time and the obsjobs functions by cumulative time.
The counting wrapper and cProfile both slow the run, so the rates printed here are not
benchmark figures. ``bench/pg_throughput.py`` measures those.

Usage::

    /work/bench-venv/bin/python bench/pg_profile.py [--jobs N] [--top K]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import pstats
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from memory_throughput import Telemetry
from pg_common import DEFAULT_CONNINFO, Contender, ThroughputRun
from pg_obsjobs import ObsjobsContender
from pg_peers import ProcrastinateContender, SaqContender
from pg_throughput import configure_logging
from psycopg import sql

_SPACES = re.compile(r"\s+")


def _statement_key(query: object) -> str:
    """Return the first words of a statement, enough to tell the libraries' statements apart."""
    if isinstance(query, bytes):
        text = query.decode(errors="replace")
    elif isinstance(query, sql.Composable):
        text = query.as_string(None)
    else:
        text = str(query)
    return _SPACES.sub(" ", text).strip()[:70]


class StatementCounter:
    """A counter of statements sent through psycopg's async cursors and transaction commands.

    ``AsyncCursor.execute`` covers ``AsyncConnection.execute`` too, and the connection's
    ``_exec_command`` covers BEGIN, COMMIT, ROLLBACK and savepoints. Each counted call
    is one round trip to the server. NOTE: ``_exec_command`` is private psycopg API
    (checked on psycopg 3.3.9), so on another version the transaction commands may go
    uncounted.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count statements while the block runs."""
        execute = psycopg.AsyncCursor.execute
        command = psycopg.AsyncConnection._exec_command
        counts = self.counts

        async def counted_execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            counts[_statement_key(query)] += 1
            return await execute(cursor, query, *args, **kwargs)

        def counted_command(connection: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            counts[_statement_key(query)] += 1
            return command(connection, query, *args, **kwargs)

        psycopg.AsyncCursor.execute = counted_execute  # type: ignore[method-assign, assignment]
        psycopg.AsyncConnection._exec_command = counted_command  # type: ignore[method-assign, assignment]
        try:
            yield
        finally:
            psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign]
            psycopg.AsyncConnection._exec_command = command  # type: ignore[method-assign]


def print_round_trips(label: str, run: ThroughputRun, counter: StatementCounter) -> None:
    """Print the statements per job of one drain, most frequent first."""
    jobs = run.drain.jobs
    total = sum(counter.counts.values())
    print(f"\n=== {label}: {total / jobs:.2f} round trips per job ({total} for {jobs} jobs) ===")
    for key, count in counter.counts.most_common(12):
        print(f"{count / jobs:8.3f}  {key}")


async def _run(contender: Contender, conninfo: str, jobs: int) -> ThroughputRun:
    return await contender.throughput(conninfo, jobs)


def count_round_trips(conninfo: str, jobs: int, concurrency: int, telemetry: Telemetry) -> None:
    """Run one throughput run per library with the statement counter around the drain."""
    for build in (
        lambda hook: ObsjobsContender(telemetry, concurrency, drain_hook=hook),
        lambda hook: ProcrastinateContender(concurrency, drain_hook=hook),
        lambda hook: SaqContender(concurrency, drain_hook=hook),
    ):
        counter = StatementCounter()
        contender = build(counter.counting)
        run = asyncio.run(_run(contender, conninfo, jobs))
        print_round_trips(contender.label, run, counter)


def profile_obsjobs(
    conninfo: str, jobs: int, concurrency: int, telemetry: Telemetry, top: int
) -> None:
    """Profile the obsjobs drain phase and print its top functions."""
    profiler = cProfile.Profile()

    @contextlib.contextmanager
    def profiled() -> Iterator[None]:
        profiler.enable()
        try:
            yield
        finally:
            profiler.disable()

    contender = ObsjobsContender(telemetry, concurrency, drain_hook=profiled)
    run = asyncio.run(_run(contender, conninfo, jobs))
    print(f"\n=== obsjobs drain under cProfile: {jobs} jobs in {run.drain.seconds:.3f} s ===")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    print("--- obsjobs functions by cumulative time ---")
    stats.sort_stats("cumulative").print_stats("/obsjobs/", top)


def main(argv: Sequence[str] | None = None) -> None:
    """Count round trips for every library, then profile obsjobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conninfo", default=DEFAULT_CONNINFO, help="libpq connection string")
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per throughput run")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency")
    parser.add_argument("--top", type=int, default=25, help="functions to print per table")
    arguments = parser.parse_args(argv)
    if min(arguments.jobs, arguments.concurrency, arguments.top) < 1:
        parser.error("--jobs, --concurrency and --top must be positive integers")
    configure_logging()
    telemetry = Telemetry.create()
    count_round_trips(arguments.conninfo, arguments.jobs, arguments.concurrency, telemetry)
    profile_obsjobs(
        arguments.conninfo, arguments.jobs, arguments.concurrency, telemetry, arguments.top
    )
    telemetry.provider.shutdown()


if __name__ == "__main__":
    main()
