"""Measure enqueue-to-start latency on an idle PostgreSQL worker.

A worker process runs a real :class:`obsjobs.Engine` on :class:`PostgresQueue` and prints
the wall-clock time at which each job's perform starts. This process enqueues one job at
a time, lets the worker go idle between jobs, and reports two latencies per job:

- *commit to start*: from the moment ``enqueue()`` returned (the job is committed) to
  the start of perform. This is the wake-up path: NOTIFY, LISTEN, claim, task start.
- *call to start*: from the ``enqueue()`` call to the start of perform. This adds the
  enqueue's own round trip and its durable commit, whose WAL flush is set by the disk
  (measure it with ``pg_test_fsync``).

Both processes run on one host, so their ``time.time()`` clocks agree.

Usage::

    /work/venv/bin/python bench/pg_latency.py [--conninfo "host=127.0.0.1 ..."] [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
from psycopg import sql

from obsjobs.protocols import NewJob
from obsjobs.providers.postgres import PostgresQueue, migrate

DEFAULT_CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=postgres"
IDLE_GAP_S = 0.02
"""Pause between jobs, so that the worker is back in wait() when the next job arrives."""
PROJECT_ROOT = Path(__file__).resolve().parent.parent

WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys
    import time

    import structlog

    from obsjobs import Engine
    from obsjobs.providers.postgres import PostgresQueue

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    conninfo, schema = sys.argv[1:3]


    async def main() -> None:
        engine = Engine(None, PostgresQueue(conninfo, schema=schema), concurrency=10)

        @engine.job(name="bench.mark")
        async def mark(state: None, index: int) -> None:
            print(index, time.time(), flush=True)

        async with engine:
            print("ready", flush=True)
            await asyncio.Event().wait()


    asyncio.run(main())
    """
)


def percentile(values: list[float], fraction: float) -> float:
    """Return the value at ``fraction`` (0 to 1) of the sorted values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def read_line(stream: asyncio.StreamReader) -> str:
    """Return the worker's next output line without its newline."""
    return (await asyncio.wait_for(stream.readline(), 30)).decode().strip()


async def run(conninfo: str, schema: str, jobs: int) -> None:
    """Start the worker, enqueue ``jobs`` jobs one by one and print latency percentiles."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER_SCRIPT,
        conninfo,
        schema,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
    )
    assert worker.stdout is not None
    producer = PostgresQueue(conninfo, schema=schema)
    await producer.open()
    call_ms: list[float] = []
    commit_ms: list[float] = []
    try:
        while await read_line(worker.stdout) != "ready":
            pass
        await asyncio.sleep(0.5)
        for index in range(jobs):
            called = time.time()
            await producer.enqueue([NewJob(name="bench.mark", queue="default", args=[index])])
            committed = time.time()
            number, started = (await read_line(worker.stdout)).split()
            assert int(number) == index
            call_ms.append((float(started) - called) * 1000)
            commit_ms.append((float(started) - committed) * 1000)
            await asyncio.sleep(IDLE_GAP_S)
    finally:
        await producer.close()
        worker.terminate()
        await worker.wait()

    for label, values in (("commit to start", commit_ms), ("call to start", call_ms)):
        print(
            f"{label:16} p50 {statistics.median(values):6.2f} ms   "
            f"p99 {percentile(values, 0.99):6.2f} ms   max {max(values):6.2f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conninfo", default=DEFAULT_CONNINFO, help="libpq connection string")
    parser.add_argument("--jobs", type=int, default=500, help="jobs to enqueue one by one")
    args = parser.parse_args()
    schema = f"obsjobs_bench_{secrets.token_hex(4)}"
    await migrate(args.conninfo, schema)
    try:
        await run(args.conninfo, schema, args.jobs)
    finally:
        async with await psycopg.AsyncConnection.connect(args.conninfo, autocommit=True) as c:
            await c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    asyncio.run(main())
