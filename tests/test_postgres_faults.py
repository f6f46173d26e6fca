"""Failure tests of the engine on the PostgreSQL provider, against a real server.

They stop a worker process with SIGTERM under load, terminate the provider's server
sessions while jobs run, and SIGKILL a worker in the middle of a job. Like
tests/test_postgres.py, each test runs in its own random schema on the server at
127.0.0.1:5432, dropped afterwards, and is skipped without a server unless ``CI=true``.
Every wait is bounded, and every subprocess is killed by its pid when a test ends early.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs
from structlog.typing import EventDict
from test_postgres import (
    CONNINFO,
    LIVENESS_S,
    TEST_TIMEOUT_S,
    backend_pids,
    drop_schema,
    eventually,
    fetch_one,
    fresh_application_name,
    fresh_schema_name,
    job_row,
    require_server,
    terminate,
)

from obsjobs import DEFAULT_MAX_ATTEMPTS, Engine, Metrics, compose, current_job
from obsjobs.protocols import NewJob
from obsjobs.providers.postgres import PostgresQueue, migrate

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 1.0
"""The lease of the test's providers: short, so that rescues happen within a test."""
GRACE_S = 10.0
"""The worker's shutdown grace, far longer than a job of a few milliseconds."""
RECORD_JOB = "tests.record"
JOB_PAUSE_S = 0.01
"""How long each recording job sleeps before it records its run."""


# Fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def bounded_in_time() -> Iterator[None]:
    """Bound every test in time: a hang prints every thread's stack and ends the run."""
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A freshly migrated schema with an empty ``performed`` table, dropped after the test.

    Jobs insert one ``performed`` row per run that reached its end, so a job that ran
    to completion twice shows up as two rows.
    """
    await require_server()
    name = fresh_schema_name()
    await migrate(CONNINFO, name)
    async with await psycopg.AsyncConnection.connect(CONNINFO, autocommit=True) as connection:
        await connection.execute(
            sql.SQL("CREATE TABLE {} (job_id bigint NOT NULL, attempt integer NOT NULL)").format(
                sql.Identifier(name, "performed")
            )
        )
    yield name
    await drop_schema(name)


def new_queue(schema: str, **options: Any) -> PostgresQueue:
    """Build a provider on the test schema with a short lease and its own application_name."""
    options.setdefault("lease_s", LEASE_S)
    options.setdefault("application_name", fresh_application_name())
    return PostgresQueue(CONNINFO, schema=schema, **options)


@pytest.fixture
async def queue(schema: str) -> AsyncIterator[PostgresQueue]:
    """An opened provider for enqueueing, with no worker, closed after the test."""
    provider = new_queue(schema)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """Every structlog event at info level and above, logged while the test runs.

    Events are filtered at info whatever an earlier test configured, so the result does
    not depend on test order. The earlier configuration is restored afterwards.
    """
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(**saved)


def record_jobs(count: int) -> list[NewJob]:
    """Build ``count`` jobs of the recording job, each pausing ``JOB_PAUSE_S``.

    They get a registered job's default ``max_attempts``, not ``NewJob``'s 1, because a
    rescue after the last attempt makes a job dead instead of running it again.
    """
    return [
        NewJob(
            name=RECORD_JOB,
            queue="default",
            kwargs={"pause_s": JOB_PAUSE_S},
            max_attempts=DEFAULT_MAX_ATTEMPTS,
        )
        for _ in range(count)
    ]


async def count_performed(db: psycopg.AsyncConnection[Any]) -> int:
    """Return how many runs were recorded in ``performed``."""
    return int(await fetch_one(db, "SELECT count(*) FROM performed"))


async def performed_attempts(db: psycopg.AsyncConnection[Any]) -> dict[str, list[int]]:
    """Return the attempts of every recorded run, by job id, in ascending order."""
    cursor = await db.execute(b"SELECT job_id, attempt FROM performed ORDER BY job_id, attempt")
    attempts: dict[str, list[int]] = defaultdict(list)
    for job_id, attempt in await cursor.fetchall():
        attempts[str(job_id)].append(attempt)
    return dict(attempts)


async def job_states(db: psycopg.AsyncConnection[Any]) -> dict[str, tuple[str, int]]:
    """Return the state and attempt counter of every stored job, by job id."""
    cursor = await db.execute(b"SELECT id, state, attempt FROM jobs")
    return {str(job_id): (state, attempt) for job_id, state, attempt in await cursor.fetchall()}


async def wait_for_exit(
    process: asyncio.subprocess.Process, bound_s: float, description: str
) -> int:
    """Return the exit status of ``process``, or fail the test if it runs past ``bound_s``."""
    try:
        return await asyncio.wait_for(process.wait(), bound_s)
    except TimeoutError:
        pytest.fail(f"{description} did not exit within {bound_s:g}s")


@asynccontextmanager
async def killed_on_exit(
    *command: str, cwd: Path, env: dict[str, str], output: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``command`` with its output in the file ``output``, and SIGKILL it by pid on exit.

    The output goes to a file rather than a pipe, so a process that logs a lot never
    blocks on a full pipe that the test is not reading.
    """
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
            await wait_for_exit(process, LIVENESS_S, f"process {process.pid} after SIGKILL")


def json_events(output: Path) -> list[dict[str, Any]]:
    """Return the JSON log events in a worker's output, skipping any other line."""
    events = []
    for line in output.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def subprocess_env(**extra: str) -> dict[str, str]:
    """Return this process's environment, with the project importable and ``extra`` set."""
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **extra}


# SIGTERM under load ---------------------------------------------------------------------

WORKER_MODULE = textwrap.dedent(
    """
    import asyncio
    import os

    import psycopg
    from psycopg import sql

    from obsjobs import Engine, current_job
    from obsjobs.providers.postgres import PostgresQueue

    CONNINFO = os.environ["FAULTS_CONNINFO"]
    SCHEMA = os.environ["FAULTS_SCHEMA"]
    INSERT = sql.SQL("INSERT INTO {} (job_id, attempt) VALUES (%s, %s)").format(
        sql.Identifier(SCHEMA, "performed")
    )

    engine = Engine(
        None,
        PostgresQueue(
            CONNINFO,
            schema=SCHEMA,
            lease_s=float(os.environ["FAULTS_LEASE_S"]),
            application_name=os.environ["FAULTS_APPLICATION_NAME"],
        ),
    )


    @engine.job(name="tests.record")
    async def record(state: None, pause_s: float) -> None:
        # Recorded last and committed at once, so a row means this run reached its end.
        await asyncio.sleep(pause_s)
        job = current_job()
        async with await psycopg.AsyncConnection.connect(CONNINFO, autocommit=True) as db:
            await db.execute(INSERT, (int(job.job_id), job.attempt))
    """
)


def worker_command() -> tuple[str, ...]:
    """Return the ``obsjobs worker`` command line for the module ``faultjobs`` in tmp_path."""
    return (
        sys.executable, "-m", "obsjobs", "worker", "faultjobs:engine",
        "--concurrency", "8", "--shutdown-grace", str(GRACE_S), "--log-format", "json",
    )  # fmt: skip


async def test_sigterm_under_load_loses_nothing(
    schema: str, queue: PostgresQueue, db: psycopg.AsyncConnection[Any], tmp_path: Path
) -> None:
    """SIGTERM mid-run exits 0 after in-flight jobs finish, and a second worker runs the rest.

    Each job records its run last, so a job that ran to completion twice would show two
    rows in ``performed``. With a grace far longer than a job, nothing is cancelled.
    """
    total = 500
    (tmp_path / "faultjobs.py").write_text(WORKER_MODULE)
    env = subprocess_env(
        FAULTS_CONNINFO=CONNINFO,
        FAULTS_SCHEMA=schema,
        FAULTS_LEASE_S=str(LEASE_S),
        FAULTS_APPLICATION_NAME=fresh_application_name(),
    )
    created = await queue.enqueue(record_jobs(total))
    first_output, second_output = tmp_path / "first.log", tmp_path / "second.log"

    async with killed_on_exit(
        *worker_command(), cwd=tmp_path, env=env, output=first_output
    ) as first:

        async def some_ran() -> bool:
            return await count_performed(db) >= total // 5

        await eventually(some_ran, "a fifth of the jobs running")
        first.send_signal(signal.SIGTERM)
        first_status = await wait_for_exit(first, GRACE_S, "the first worker after SIGTERM")
    ran_first = await count_performed(db)
    after_first = await job_states(db)

    async with killed_on_exit(
        *worker_command(), cwd=tmp_path, env=env, output=second_output
    ) as second:

        async def all_ran() -> bool:
            return await count_performed(db) >= total

        await eventually(all_ran, f"all {total} jobs running", timeout_s=2 * LIVENESS_S)
        second.send_signal(signal.SIGTERM)
        second_status = await wait_for_exit(second, GRACE_S, "the second worker after SIGTERM")
    attempts = await performed_attempts(db)
    final = await job_states(db)
    first_events = [event["event"] for event in json_events(first_output)]

    assert first_status == 0, first_output.read_text(errors="replace")[-2000:]
    assert second_status == 0, second_output.read_text(errors="replace")[-2000:]
    assert 0 < ran_first < total, "SIGTERM must land while jobs remain"
    assert "worker.stopped" in first_events
    assert "worker.cancelling_jobs" not in first_events
    assert [job_id for job_id, (state, _) in after_first.items() if state == "running"] == []
    assert [
        job_id
        for job_id, (state, attempt) in after_first.items()
        if state == "waiting" and attempt != 0
    ] == []
    assert set(attempts) == {result.job_id for result in created}
    assert {job_id: runs for job_id, runs in attempts.items() if runs != [1]} == {}
    assert {job_id: row for job_id, row in final.items() if row != ("succeeded", 1)} == {}


# Terminated server sessions -------------------------------------------------------------


async def test_terminated_backends_worker_recovers(
    schema: str,
    queue: PostgresQueue,
    db: psycopg.AsyncConnection[Any],
    logs: list[EventDict],
) -> None:
    """After its sessions are terminated twice mid-run, the worker reconnects and finishes.

    Delivery is at least once, so a second run is allowed by design, but only for a job
    whose success write failed. Such a job stays running until its lease expires. It is
    then rescued and run again with its attempt raised. A claim whose reply was lost
    does not run its jobs, so they run once, after the rescue, with attempt 2. So every
    job must have run, duplicates must be jobs logged as ``job.finish_failed``, no
    attempt may run twice, and the stored attempt must be that of the last run.
    """
    total = 300
    application_name = fresh_application_name()
    insert = sql.SQL("INSERT INTO {} (job_id, attempt) VALUES (%s, %s)").format(
        sql.Identifier(schema, "performed")
    )
    terminated: list[int] = []

    # The jobs record through their own pool, whose sessions are not terminated.
    async with AsyncConnectionPool(
        CONNINFO, min_size=2, max_size=8, kwargs={"autocommit": True}, open=False
    ) as pool:
        engine = Engine(
            pool,
            new_queue(schema, application_name=application_name),
            concurrency=8,
            shutdown_grace_s=LIVENESS_S,
        )

        @engine.job(name=RECORD_JOB)
        async def record(state: AsyncConnectionPool[Any], pause_s: float) -> None:
            await asyncio.sleep(pause_s)
            job = current_job()
            async with state.connection() as connection:
                await connection.execute(insert, (int(job.job_id), job.attempt))

        await engine.start()
        try:
            # The LISTEN session opens when the idle worker first waits; the jobs are
            # enqueued after that, so the test also cuts a live LISTEN session.
            async def listening() -> bool:
                return bool(await backend_pids(db, f"{application_name}-listen"))

            await eventually(listening, "the worker's LISTEN session")
            created = await queue.enqueue(record_jobs(total))
            for threshold in (total // 5, total // 2):

                async def reached(threshold: int = threshold) -> bool:
                    return await count_performed(db) >= threshold

                await eventually(reached, f"{threshold} jobs running")
                terminated.append(
                    await terminate(db, application_name)
                    + await terminate(db, f"{application_name}-listen")
                )

            async def all_succeeded() -> bool:
                query = "SELECT count(*) FROM jobs WHERE state = 'succeeded'"
                return bool(await fetch_one(db, query) == total)

            await eventually(all_succeeded, f"all {total} jobs succeeding", 2 * LIVENESS_S)
        finally:
            await engine.stop()
    attempts = await performed_attempts(db)
    final = await job_states(db)
    events = [entry["event"] for entry in logs]
    unfinished = {entry["job_id"] for entry in logs if entry["event"] == "job.finish_failed"}
    duplicates = {job_id for job_id, runs in attempts.items() if len(runs) > 1}

    assert all(count >= 1 for count in terminated), terminated
    assert set(attempts) == {result.job_id for result in created}
    assert duplicates <= unfinished
    assert {job_id: runs for job_id, runs in attempts.items() if len(set(runs)) != len(runs)} == {}
    assert {job_id: state for job_id, (state, _) in final.items() if state != "succeeded"} == {}
    assert {
        job_id: (row_attempt, attempts[job_id])
        for job_id, (_, row_attempt) in final.items()
        if row_attempt != max(attempts[job_id])
    } == {}
    assert "postgres.listen_lost" in events
    assert "postgres.listen_restored" in events
    assert "postgres.retrying" in events


# A killed worker ------------------------------------------------------------------------

VICTIM_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from obsjobs import Engine, current_job
    from obsjobs.providers.postgres import PostgresQueue

    conninfo, schema, application_name, lease_s = sys.argv[1:5]


    async def main() -> None:
        provider = PostgresQueue(
            conninfo, schema=schema, lease_s=float(lease_s), application_name=application_name
        )
        engine = Engine(None, provider)

        @engine.job(name="tests.slow")
        async def slow(state: None) -> None:
            print("started", current_job().job_id, flush=True)
            await asyncio.Event().wait()

        async with engine:
            await asyncio.Event().wait()


    asyncio.run(main())
    """
)


async def test_rescue_counted_and_logged(
    schema: str,
    queue: PostgresQueue,
    db: psycopg.AsyncConnection[Any],
    tmp_path: Path,
    logs: list[EventDict],
) -> None:
    """A SIGKILLed worker's job is rescued, counted in obsjobs_jobs_rescued_total and logged."""
    script = tmp_path / "victim.py"
    script.write_text(VICTIM_SCRIPT)
    victim_output = tmp_path / "victim.log"
    [created] = await queue.enqueue([NewJob(name="tests.slow", queue="default", max_attempts=3)])
    command = (
        sys.executable, str(script), CONNINFO, schema, fresh_application_name(), str(LEASE_S),
    )  # fmt: skip

    async with killed_on_exit(
        *command, cwd=tmp_path, env=subprocess_env(), output=victim_output
    ) as victim:

        async def victim_started() -> bool:
            return f"started {created.job_id}" in victim_output.read_text(errors="replace")

        await eventually(victim_started, "the victim starting the job")
        os.kill(victim.pid, signal.SIGKILL)
        await wait_for_exit(victim, LIVENESS_S, "the victim after SIGKILL")
    victim_row = await job_row(db, created.job_id)

    registry = CollectorRegistry()
    attempts: list[int] = []
    performed = asyncio.Event()
    engine = Engine(None, compose(new_queue(schema), Metrics(registry)))

    @engine.job(name="tests.slow")
    async def slow(state: None) -> None:
        attempts.append(current_job().attempt)
        performed.set()

    await engine.start()
    try:
        await asyncio.wait_for(performed.wait(), LIVENESS_S)
    finally:
        await engine.stop()
    final = await job_row(db, created.job_id)
    rescued_total = registry.get_sample_value("obsjobs_jobs_rescued_total", {"queue": "default"})
    rescued_logs = [
        {key: entry.get(key) for key in ("job_id", "job", "queue", "attempt", "dead")}
        for entry in logs
        if entry["event"] == "job.rescued"
    ]

    assert (victim_row["state"], victim_row["attempt"]) == ("running", 1)
    assert attempts == [2]
    assert (final["state"], final["attempt"]) == ("succeeded", 2)
    assert rescued_total == 1.0
    assert rescued_logs == [
        {"job_id": created.job_id, "job": "tests.slow", "queue": "default", "attempt": 1,
         "dead": False},
    ]  # fmt: skip
