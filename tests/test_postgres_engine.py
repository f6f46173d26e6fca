"""Integration tests of the real Engine on the PostgreSQL provider, and the contract suite.

Like tests/test_postgres.py, each test runs in its own random schema on the server at
127.0.0.1:5432, and is skipped without a server unless ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from test_postgres import (
    CONNINFO,
    LIVENESS_S,
    TEST_TIMEOUT_S,
    drop_schema,
    eventually,
    fetch_one,
    fresh_application_name,
    fresh_schema_name,
    job_row,
    require_server,
)

from obsjobs import Engine, Overrun, RetryJob, current_job
from obsjobs.protocols import NewJob, QueueProvider
from obsjobs.providers.postgres import PostgresQueue, migrate
from obsjobs.testing import ProviderContract, run_engine_until

pytestmark = pytest.mark.integration

ENGINE_LEASE_S = 1.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def bounded_in_time() -> Iterator[None]:
    """Bound every test in time: a hang prints every thread's stack and ends the run."""
    import faulthandler

    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A freshly migrated schema, dropped after the test."""
    await require_server()
    name = fresh_schema_name()
    await migrate(CONNINFO, name)
    yield name
    await drop_schema(name)


def new_queue(schema: str, **options: Any) -> PostgresQueue:
    """Build a provider for one engine, with a short lease."""
    options.setdefault("lease_s", ENGINE_LEASE_S)
    options.setdefault("application_name", fresh_application_name())
    return PostgresQueue(CONNINFO, schema=schema, **options)


@pytest.fixture
async def queue(schema: str) -> AsyncIterator[PostgresQueue]:
    """An opened provider for enqueueing and inspecting, closed after the test."""
    provider = new_queue(schema)
    await provider.open()
    yield provider
    await provider.close()


# The contract suite ---------------------------------------------------------------------


class TestPostgresContract(ProviderContract):
    """The shared provider contract, run against PostgreSQL."""

    durable = True
    lease_s_for_tests = 1.0

    @pytest.fixture
    async def provider(self, schema: str) -> AsyncIterator[QueueProvider]:
        """An opened PostgresQueue on the test schema."""
        provider = new_queue(schema, lease_s=self.lease_s_for_tests)
        await provider.open()
        yield provider
        await provider.close()

    async def sibling(self, provider: QueueProvider) -> QueueProvider:
        """A new provider instance on the same schema: another worker process."""
        if not isinstance(provider, PostgresQueue):
            raise TypeError("the contract fixture yields a PostgresQueue")
        return new_queue(provider.schema, lease_s=self.lease_s_for_tests)


# Engines --------------------------------------------------------------------------------


@dataclass
class Runs:
    """Test state: the attempts and arguments each job ran with."""

    attempts: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)


def new_engine(schema: str, state: Any, **options: Any) -> Engine[Any]:
    """Build an engine on a new provider instance for ``schema``."""
    options.setdefault("shutdown_grace_s", LIVENESS_S)
    return Engine(state, new_queue(schema), **options)


async def test_engine_performs_enqueued_jobs(schema: str, db: psycopg.AsyncConnection[Any]) -> None:
    """Jobs enqueued through a registered job run once each and end succeeded."""
    runs = Runs()
    engine = new_engine(schema, runs)

    @engine.job(name="tests.add")
    async def add(state: Runs, left: int, right: int) -> None:
        state.values.append(left + right)

    await engine.start()
    ids = [await add.enqueue(index, right=10) for index in range(5)]
    await run_engine_until(engine, lambda: len(runs.values) == 5, LIVENESS_S)
    states = [(await job_row(db, job_id))["state"] for job_id in ids]

    assert sorted(runs.values) == [10, 11, 12, 13, 14]
    assert states == ["succeeded"] * 5


async def test_engine_retries_until_success(schema: str, db: psycopg.AsyncConnection[Any]) -> None:
    """A job asking to be retried runs again after its delay, with attempt raised."""
    runs = Runs()
    engine = new_engine(schema, runs)

    @engine.job(name="tests.flaky", max_attempts=3)
    async def flaky(state: Runs) -> None:
        state.attempts.append(current_job().attempt)
        if len(state.attempts) < 3:
            raise RetryJob(delay=0.05, reason="not yet")

    await engine.start()
    job_id = await flaky.enqueue()
    await run_engine_until(engine, lambda: len(runs.attempts) == 3, LIVENESS_S)
    row = await job_row(db, job_id)

    assert runs.attempts == [1, 2, 3]
    assert (row["state"], row["attempt"]) == ("succeeded", 3)
    assert row["last_error"] == "not yet"


async def test_engine_failing_job_is_dead(schema: str, queue: PostgresQueue) -> None:
    """A job that raises without a retry policy is kept as dead with its error."""
    runs = Runs()
    engine = new_engine(schema, runs)

    @engine.job(name="tests.broken")
    async def broken(state: Runs) -> None:
        state.attempts.append(current_job().attempt)
        raise ValueError("bad input")

    await engine.start()
    job_id = await broken.enqueue()

    async def is_dead() -> bool:
        return bool(await queue.dead_jobs())

    try:
        await eventually(is_dead, "the job dying")
    finally:
        await engine.stop()
    [dead] = await queue.dead_jobs()

    assert (dead.job_id, dead.error, dead.attempt) == (job_id, "ValueError: bad input", 1)
    assert runs.attempts == [1]


async def test_engine_unknown_job_is_dead(schema: str, queue: PostgresQueue) -> None:
    """A stored job whose name no worker registered is recorded as dead, not dropped."""
    engine = new_engine(schema, Runs())
    [created] = await queue.enqueue([NewJob(name="tests.nobody", queue="default")])
    await engine.start()

    async def is_dead() -> bool:
        return bool(await queue.dead_jobs())

    try:
        await eventually(is_dead, "the unknown job dying")
    finally:
        await engine.stop()
    [dead] = await queue.dead_jobs()

    assert dead.job_id == created.job_id
    assert dead.error is not None
    assert "tests.nobody" in dead.error


async def test_engine_shutdown_gives_jobs_back(
    schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """Stopping with no grace cancels running jobs and puts every job back, attempt uncounted."""
    runs = Runs()
    engine = new_engine(schema, runs, concurrency=2)

    @engine.job(name="tests.hang")
    async def hang(state: Runs) -> None:
        state.attempts.append(current_job().attempt)
        if len(state.attempts) == 2:
            state.started.set()
        await asyncio.Event().wait()

    await engine.start()
    for _ in range(3):
        await hang.enqueue()
    try:
        await asyncio.wait_for(runs.started.wait(), LIVENESS_S)
    finally:
        await engine.stop(grace_s=0)
    cursor = await db.execute(b"SELECT state, attempt, lease_expires_at FROM jobs ORDER BY id")

    assert runs.attempts == [1, 1]
    assert await cursor.fetchall() == [("waiting", 0, None)] * 3


async def test_engines_perform_each_job_once(schema: str, queue: PostgresQueue) -> None:
    """1,000 jobs across eight engines each run exactly once, counted in a table."""
    table = sql.Identifier(schema, "performed")
    async with await psycopg.AsyncConnection.connect(CONNINFO, autocommit=True) as connection:
        await connection.execute(sql.SQL("CREATE TABLE {} (job integer NOT NULL)").format(table))
    insert = sql.SQL("INSERT INTO {} (job) VALUES (%s)").format(table)
    count_rows = sql.SQL("SELECT count(*), count(DISTINCT job) FROM {}").format(table)

    async with AsyncConnectionPool(
        CONNINFO, min_size=2, max_size=16, kwargs={"autocommit": True}, open=False
    ) as pool:
        engines = [new_engine(schema, pool, concurrency=8) for _ in range(8)]
        for engine in engines:

            @engine.job(name="tests.record")
            async def record(state: AsyncConnectionPool[Any], index: int) -> None:
                async with state.connection() as connection:
                    await connection.execute(insert, (index,))

        jobs = [NewJob(name="tests.record", queue="default", args=[index]) for index in range(1000)]
        await queue.enqueue(jobs[:500])
        await asyncio.gather(*(engine.start() for engine in engines))
        try:
            for start in range(500, 1000, 100):
                await queue.enqueue(jobs[start : start + 100])

            async def all_done() -> bool:
                return await fetch_one_from(pool, count_rows) == (1000, 1000)

            await eventually(all_done, "1,000 jobs running", timeout_s=3 * LIVENESS_S)
        finally:
            await asyncio.gather(*(engine.stop() for engine in engines))
        rows, distinct = await fetch_one_from(pool, count_rows)
    stats = await queue.stats()
    claims = [statistics.claimed for engine in engines if (statistics := engine.statistics())]

    assert (rows, distinct) == (1000, 1000)
    assert [(entry.ready, entry.running, entry.dead) for entry in stats] == [(0, 0, 0)]
    assert sum(claims) == 1000


async def fetch_one_from(pool: AsyncConnectionPool[Any], query: sql.Composed) -> tuple[Any, ...]:
    """Return the single row of ``query`` run on a connection from ``pool``."""
    async with pool.connection() as connection:
        cursor = await connection.execute(query)
        row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


VICTIM_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from obsjobs import Engine
    from obsjobs.providers.postgres import PostgresQueue

    conninfo, schema, application_name = sys.argv[1:4]


    async def main() -> None:
        provider = PostgresQueue(
            conninfo, schema=schema, lease_s=1.0, application_name=application_name
        )
        engine = Engine(None, provider)

        @engine.job(name="tests.slow")
        async def slow(state: None) -> None:
            print("started", flush=True)
            await asyncio.Event().wait()

        async with engine:
            await asyncio.Event().wait()


    asyncio.run(main())
    """
)


async def read_until(stream: asyncio.StreamReader, wanted: str) -> bool:
    """Read lines from ``stream`` until one is ``wanted``; return False at end of file."""
    while line := await stream.readline():
        if line.decode().strip() == wanted:
            return True
    return False


async def test_killed_worker_job_is_rescued(
    schema: str, queue: PostgresQueue, db: psycopg.AsyncConnection[Any], tmp_path: Path
) -> None:
    """A job whose worker was SIGKILLed is rescued after its lease and run by another."""
    script = tmp_path / "victim.py"
    script.write_text(VICTIM_SCRIPT)
    [created] = await queue.enqueue([NewJob(name="tests.slow", queue="default", max_attempts=3)])
    victim = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        CONNINFO,
        schema,
        fresh_application_name(),
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert victim.stdout is not None
        started = await asyncio.wait_for(read_until(victim.stdout, "started"), LIVENESS_S)
        victim_row = await job_row(db, created.job_id)
    finally:
        victim.send_signal(signal.SIGKILL)
        await asyncio.wait_for(victim.wait(), LIVENESS_S)

    async def lease_expired() -> bool:
        query = "SELECT lease_expires_at < now() FROM jobs WHERE id = %s"
        return bool(await fetch_one(db, query, int(created.job_id)))

    await eventually(lease_expired, "the killed worker's lease expiring")
    rescued = await queue.rescue()

    runs = Runs()
    engine = new_engine(schema, runs)

    @engine.job(name="tests.slow")
    async def slow(state: Runs) -> None:
        state.attempts.append(current_job().attempt)

    await run_engine_until(engine, lambda: bool(runs.attempts), LIVENESS_S)
    final = await job_row(db, created.job_id)

    assert started
    assert (victim_row["state"], victim_row["attempt"]) == ("running", 1)
    assert [(job.job_id, job.attempt, job.dead) for job in rescued] == [(created.job_id, 1, False)]
    assert runs.attempts == [2]
    assert (final["state"], final["attempt"]) == ("succeeded", 2)


async def test_registered_job_in_caller_transaction(
    schema: str,
    queue: PostgresQueue,
    db: psycopg.AsyncConnection[Any],
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """A registered job enqueued in transaction() commits or rolls back with the caller's work."""
    engine: Engine[None] = Engine(None, queue, tracer_provider=tracer_provider)

    @engine.job(name="tests.receipt")
    async def send_receipt(state: None, order: int) -> None:
        return None

    async with await psycopg.AsyncConnection.connect(CONNINFO) as connection:
        async with queue.transaction(connection):
            kept = await send_receipt.enqueue(1)
        with pytest.raises(RuntimeError):
            async with queue.transaction(connection):
                await send_receipt.enqueue(2)
                raise RuntimeError("the order failed")
    cursor = await db.execute(b"SELECT id, args::text, headers::text FROM jobs")
    rows = await cursor.fetchall()
    spans = [span.name for span in span_exporter.get_finished_spans()]

    assert [(str(row[0]), row[1]) for row in rows] == [(kept, "[1]")]
    assert "traceparent" in rows[0][2]
    assert spans.count("send default") == 2


async def test_schedulers_enqueue_each_tick_once(
    schema: str, queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """Two schedulers on one schedule add one job per tick, and last_tick is stored."""
    engines = [new_engine(schema, None) for _ in range(2)]
    for engine in engines:

        @engine.job(name="tests.tick")
        async def tick(state: None) -> None:
            return None

        engine.every(0.2, tick, name="fast", overrun=Overrun.ALLOW)

    await asyncio.gather(*(engine.start(worker=False) for engine in engines))
    try:

        async def three_ticks() -> bool:
            return bool(await fetch_one(db, "SELECT count(*) >= 3 FROM jobs"))

        await eventually(three_ticks, "three ticks enqueued")
    finally:
        await asyncio.gather(*(engine.stop() for engine in engines))
    jobs, ticks = await fetch_one_row(
        db, "SELECT count(*), count(DISTINCT scheduled_time) FROM jobs"
    )
    newest = await fetch_one(db, "SELECT max(scheduled_time) FROM jobs")

    assert jobs == ticks
    assert await queue.last_tick("fast") == newest


async def fetch_one_row(db: psycopg.AsyncConnection[Any], query: str) -> tuple[Any, ...]:
    """Return the single row of a test query."""
    cursor = await db.execute(query.encode())
    row = await cursor.fetchone()
    assert row is not None
    return tuple(row)
