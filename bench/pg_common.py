"""Shared parts of the PostgreSQL benchmark: scratch schemas, job counters, timings.

Used by ``bench/pg_throughput.py`` and the per-library modules beside it. Every
measurement runs in a scratch schema that is created empty before the run and dropped
after it, so no run finds rows, indexes or statistics left by another.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

DEFAULT_CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=postgres"
IDLE_GAP_S = 0.02
"""Pause before each latency sample, so that the worker is idle again when the job arrives."""
DRAIN_TIMEOUT_S = 300.0
"""The maximum time a throughput run may take before it is reported as failed."""
ACK_TIMEOUT_S = 30.0
"""How long the stored results may lag behind the last job body before the run fails."""
ACK_POLL_S = 0.005

DrainHook = Callable[[], AbstractContextManager[object]]
"""A context manager entered around the timed drain, where ``bench/pg_profile.py`` measures."""


@dataclass(frozen=True, slots=True)
class Scratch:
    """A scratch schema and a connection string whose ``search_path`` points at it.

    Libraries that take a schema name (obsjobs) use :attr:`schema`. Libraries that
    create their tables without a schema prefix (procrastinate, SAQ) connect with
    :attr:`conninfo`, so their tables land in the scratch schema too.
    """

    schema: str
    conninfo: str


@asynccontextmanager
async def scratch_schema(conninfo: str, label: str) -> AsyncIterator[Scratch]:
    """Create an empty schema named ``bench_<label>_<random hex>`` and drop it on exit."""
    schema = f"bench_{label}_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield Scratch(schema, make_conninfo(conninfo, options=f"-c search_path={schema}"))
    finally:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
            drop = sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema))
            await connection.execute(drop)


async def fetch_value(conninfo: str, query: sql.Composable | str, params: Any = None) -> Any:
    """Run one query on a new connection and return the first column of its first row."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        cursor = await connection.execute(query, params)  # type: ignore[arg-type]
        row = await cursor.fetchone()
        return None if row is None else row[0]


@dataclass(slots=True)
class JobCounter:
    """A count of job bodies, which sets :attr:`done` when it reaches :attr:`target`.

    Every library's benchmark job calls :meth:`hit` as its only statement, so the
    count shows how many bodies really ran, whatever the library reports.
    """

    target: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0
    started_at: float = 0.0

    def hit(self) -> None:
        """Count one job body and record when it started."""
        self.started_at = time.perf_counter()
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def reset(self, target: int) -> None:
        """Start counting afresh towards ``target``."""
        self.target = target
        self.count = 0
        self.done.clear()


@dataclass(frozen=True, slots=True)
class Timing:
    """Jobs handled in one timed phase, with the wall-clock and process CPU seconds taken."""

    jobs: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Jobs per wall-clock second."""
        return self.jobs / self.seconds


@dataclass(slots=True)
class Stopwatch:
    """Wall-clock and process CPU time since :meth:`start` (or creation)."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)

    def start(self) -> None:
        """Reset both clocks to now."""
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def timing(self, jobs: int) -> Timing:
        """Return the time since :meth:`start` as the timing of ``jobs`` jobs."""
        return Timing(jobs, time.perf_counter() - self.wall, time.process_time() - self.cpu)


async def wait_for_count(counter: JobCounter, description: str) -> None:
    """Wait until ``counter`` reaches its target, or raise naming ``description`` on timeout."""
    try:
        await asyncio.wait_for(counter.done.wait(), DRAIN_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(
            f"{description}: only {counter.count} of {counter.target} job bodies ran within "
            f"{DRAIN_TIMEOUT_S:g} s"
        ) from None


async def analyze(conninfo: str, table: sql.Composable | str) -> None:
    """Run ``ANALYZE`` on ``table``, as autovacuum would have done on a long-lived queue.

    A table filled moments ago has no statistics, and PostgreSQL then plans from
    default estimates. In a one-off check, that made procrastinate's fetch sort all
    5,000 waiting jobs on every call instead of reading one row from its index. Every
    throughput run analyzes its table after seeding, outside the clock.
    """
    query = sql.SQL("ANALYZE {}").format(
        table if isinstance(table, sql.Composable) else sql.Identifier(table)
    )
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await connection.execute(query)


def check_count(description: str, expected: object, found: object) -> None:
    """Raise unless ``found`` equals ``expected``, so a run that lost jobs reports no rate."""
    if found != expected:
        raise RuntimeError(f"{description}: expected {expected}, found {found}")


async def sample_latency(
    samples: int,
    counter: JobCounter,
    enqueue_one: Callable[[], Any],
) -> list[float]:
    """Return ``samples`` enqueue-to-start latencies in seconds, one job at a time.

    Each sample pauses :data:`IDLE_GAP_S`, reads ``perf_counter``, awaits
    ``enqueue_one()`` and waits until the job body has run. The body's
    :meth:`JobCounter.hit` reads ``perf_counter`` first thing, and the sample is the
    difference. The worker must already be running in this process.
    """
    latencies: list[float] = []
    for _ in range(samples):
        await asyncio.sleep(IDLE_GAP_S)
        counter.reset(1)
        called = time.perf_counter()
        await enqueue_one()
        await wait_for_count(counter, "latency sample")
        latencies.append(counter.started_at - called)
    return latencies


@dataclass(frozen=True, slots=True)
class ThroughputRun:
    """One throughput run: seeding the queue, then a worker draining it.

    ``ack_lag_s`` is the time from the last job body to the moment a poll of the
    database found every job stored as finished (an upper bound, polled every 5 ms).
    """

    seed: Timing
    drain: Timing
    ack_lag_s: float


async def wait_for_rows(conninfo: str, query: str | sql.Composable, expected: int) -> float:
    """Poll ``query`` (a count) until it returns ``expected``, and return the seconds waited.

    The worker is still running meanwhile, so results it writes after the last job body
    are counted, and a run whose results never arrive raises instead of reporting.
    """
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        while True:
            cursor = await connection.execute(query)  # type: ignore[arg-type]
            row = await cursor.fetchone()
            found = None if row is None else row[0]
            if found == expected:
                return time.perf_counter() - started
            if time.perf_counter() - started > ACK_TIMEOUT_S:
                raise RuntimeError(
                    f"{found} of {expected} jobs stored as finished {ACK_TIMEOUT_S:g} s "
                    "after the last job body ran"
                )
            await asyncio.sleep(ACK_POLL_S)


class Contender(Protocol):
    """One library under test, as the round runner drives it."""

    key: str
    label: str

    async def throughput(self, conninfo: str, jobs: int) -> ThroughputRun:
        """Seed ``jobs`` jobs (timed), then time a worker draining them, in a new schema."""
        ...

    async def latency(self, conninfo: str, samples: int) -> list[float]:
        """Return enqueue-to-start latencies on an idle in-process worker, in a new schema."""
        ...

    async def single_enqueue(self, conninfo: str, jobs: int) -> Timing:
        """Time ``jobs`` enqueues made one after another, in a new schema."""
        ...
