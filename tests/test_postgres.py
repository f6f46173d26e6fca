"""Integration tests for the PostgreSQL provider, against a real server on 127.0.0.1:5432.

Each test runs in its own randomly named schema, dropped afterwards. Without a server the
tests are skipped, except under ``CI=true``, where a missing server fails them.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import POSTGRES_CONNINFO
from psycopg import sql

from obsjobs.errors import (
    ConfigurationError,
    JobArgumentsError,
    JobError,
    LeaseLostError,
    PayloadTooLargeError,
    ProviderError,
    ProviderUnavailableError,
)
from obsjobs.protocols import JobRecord, JobResult, NewJob, Outcome, QueueStats
from obsjobs.providers.postgres import PostgresQueue, migrate
from obsjobs.providers.postgres_migrations import LATEST_VERSION

pytestmark = pytest.mark.integration

CONNINFO = POSTGRES_CONNINFO
TEST_TIMEOUT_S = 180.0
"""Any test still running after this long dumps its tracebacks and ends the run."""
LIVENESS_S = 15.0
"""The maximum wait for something that must happen soon; a bound, never a measurement."""
LEASE_S = 2.0
WORKER = "test-worker"


# Fixtures and helpers -------------------------------------------------------------------


async def require_server(conninfo: str = CONNINFO, address: str = "127.0.0.1:5432") -> None:
    """Skip the test when PostgreSQL is not reachable, or fail it under ``CI=true``."""
    try:
        connection = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=2)
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable on {address} (CI=true): {error}")
        pytest.skip(f"PostgreSQL is not reachable on {address}")
    await connection.close()


async def drop_schema(name: str) -> None:
    """Drop ``name`` and everything in it."""
    async with await psycopg.AsyncConnection.connect(CONNINFO, autocommit=True) as connection:
        await connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
        )


def fresh_schema_name() -> str:
    """Return a new random schema name for one test."""
    return f"obsjobs_test_{secrets.token_hex(6)}"


def fresh_application_name() -> str:
    """Return a new random application_name, to find one provider's sessions."""
    return f"obsjobs-test-{secrets.token_hex(4)}"


@pytest.fixture(autouse=True)
def bounded_in_time() -> Iterator[None]:
    """Bound every test in time: a hang prints every thread's stack and ends the run."""
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
async def unmigrated_schema() -> AsyncIterator[str]:
    """A schema name that nothing has created yet; dropped after the test if created."""
    await require_server()
    name = fresh_schema_name()
    yield name
    await drop_schema(name)


@pytest.fixture
async def schema(unmigrated_schema: str) -> str:
    """A freshly migrated schema, dropped after the test."""
    await migrate(CONNINFO, unmigrated_schema)
    return unmigrated_schema


def new_queue(schema: str, **options: Any) -> PostgresQueue:
    """Build a provider on the test schema with a short lease and its own application_name."""
    options.setdefault("lease_s", LEASE_S)
    options.setdefault("application_name", fresh_application_name())
    return PostgresQueue(CONNINFO, schema=schema, **options)


@pytest.fixture
async def queue(schema: str) -> AsyncIterator[PostgresQueue]:
    """An opened provider on the test schema, closed after the test."""
    provider = new_queue(schema)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
async def other(schema: str) -> AsyncIterator[PostgresQueue]:
    """A second opened provider on the same schema: another worker process."""
    provider = new_queue(schema)
    await provider.open()
    yield provider
    await provider.close()


async def fetch_one(db: psycopg.AsyncConnection[Any], query: str, *params: Any) -> Any:
    """Run a test query and return the first column of its single row."""
    cursor = await db.execute(query.encode(), params)  # test-only text, never user input
    row = await cursor.fetchone()
    assert row is not None, f"no row for {query!r}"
    return row[0]


async def job_row(db: psycopg.AsyncConnection[Any], job_id: str) -> dict[str, Any]:
    """Return one job's row as a dict."""
    cursor = db.cursor(row_factory=psycopg.rows.dict_row)
    await cursor.execute(b"SELECT * FROM jobs WHERE id = %s", (int(job_id),))
    row = await cursor.fetchone()
    assert row is not None, f"job {job_id} not found"
    return row


def job(queue: str = "default", **fields: Any) -> NewJob:
    """Build a registered-style job for ``queue``."""
    return NewJob(name="tests.job", queue=queue, **fields)


def result(outcome: Outcome, **fields: Any) -> JobResult:
    """Build an attempt result that started now."""
    return JobResult(outcome, started_at=datetime.now(UTC), **fields)


async def expire_leases(db: psycopg.AsyncConnection[Any], ids: Sequence[str]) -> None:
    """Move the leases of ``ids`` into the past, as if their worker had died long ago."""
    await db.execute(
        b"UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = ANY(%s)",
        ([int(job_id) for job_id in ids],),
    )


async def backend_pids(db: psycopg.AsyncConnection[Any], application_name: str) -> list[int]:
    """Return the server pids of the sessions with exactly this application_name."""
    cursor = await db.execute(
        b"SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    )
    return [row[0] for row in await cursor.fetchall()]


async def terminate(db: psycopg.AsyncConnection[Any], application_name: str) -> int:
    """Terminate every session with this application_name; return how many."""
    pids = await backend_pids(db, application_name)
    for pid in pids:
        await db.execute(b"SELECT pg_terminate_backend(%s)", (pid,))
    return len(pids)


async def eventually(check: Any, what: str, timeout_s: float = LIVENESS_S) -> None:
    """Poll the async predicate ``check`` until it is true; fail after ``timeout_s``."""

    async def poll() -> None:
        # The server offers nothing to await for these conditions, so they are polled.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {timeout_s:g}s")


CLOSED_PORT_CONNINFO = "host=127.0.0.1 port=1 dbname=test user=postgres"


async def test_missing_server_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a server the fixture skips the test, naming the address."""
    monkeypatch.delenv("CI", raising=False)

    expected = r"^PostgreSQL is not reachable on 127.0.0.1:1$"
    with pytest.raises(pytest.skip.Exception, match=expected):
        await require_server(CLOSED_PORT_CONNINFO, "127.0.0.1:1")


async def test_missing_server_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a server and with CI=true, the fixture fails the test instead of skipping."""
    monkeypatch.setenv("CI", "true")

    expected = r"^PostgreSQL is not reachable on 127.0.0.1:1 \(CI=true\)"
    with pytest.raises(pytest.fail.Exception, match=expected):
        await require_server(CLOSED_PORT_CONNINFO, "127.0.0.1:1")


# Schema and migrations ----------------------------------------------------------------


async def test_migrate_returns_latest_version(unmigrated_schema: str) -> None:
    """migrate() creates the schema and returns the latest version."""
    version = await migrate(CONNINFO, unmigrated_schema)

    assert version == LATEST_VERSION


async def test_migrate_twice_is_idempotent(schema: str, db: psycopg.AsyncConnection[Any]) -> None:
    """A second migrate() applies nothing and returns the same version."""
    version = await migrate(CONNINFO, schema)
    recorded = await fetch_one(db, "SELECT count(*) FROM schema_version")

    assert version == LATEST_VERSION
    assert recorded == LATEST_VERSION


async def test_concurrent_migrate_applies_once(unmigrated_schema: str) -> None:
    """Many migrate() calls at once all succeed and record each version once."""
    versions = await asyncio.gather(*(migrate(CONNINFO, unmigrated_schema) for _ in range(6)))

    async with await psycopg.AsyncConnection.connect(CONNINFO) as connection:
        cursor = await connection.execute(
            sql.SQL("SELECT version FROM {} ORDER BY version").format(
                sql.Identifier(unmigrated_schema, "schema_version")
            )
        )
        recorded = [row[0] for row in await cursor.fetchall()]

    assert versions == [LATEST_VERSION] * 6
    assert recorded == list(range(1, LATEST_VERSION + 1))


async def test_queue_migrate_method_migrates(unmigrated_schema: str) -> None:
    """PostgresQueue.migrate() migrates its own schema, after which open() works."""
    provider = new_queue(unmigrated_schema)

    version = await provider.migrate()
    await provider.open()
    await provider.close()

    assert version == LATEST_VERSION


async def test_open_unmigrated_schema_raises(unmigrated_schema: str) -> None:
    """open() on a schema without tables raises, naming `obsjobs migrate`."""
    provider = new_queue(unmigrated_schema)

    with pytest.raises(ConfigurationError, match=r"version 0.*run `obsjobs migrate`"):
        await provider.open()


async def test_open_outdated_schema_raises(schema: str, db: psycopg.AsyncConnection[Any]) -> None:
    """open() on a schema behind this release raises, naming `obsjobs migrate`."""
    await db.execute(b"DELETE FROM schema_version WHERE version = %s", (LATEST_VERSION,))
    provider = new_queue(schema)

    with pytest.raises(ConfigurationError, match=r"run `obsjobs migrate`"):
        await provider.open()


async def test_open_newer_schema_raises(schema: str, db: psycopg.AsyncConnection[Any]) -> None:
    """open() and migrate() on a schema from a newer obsjobs raise, naming the upgrade."""
    await db.execute(
        b"INSERT INTO schema_version (version, description) VALUES (%s, 'future')",
        (LATEST_VERSION + 1,),
    )
    provider = new_queue(schema)

    with pytest.raises(ConfigurationError, match=r"newer than version .*upgrade obsjobs"):
        await provider.open()
    with pytest.raises(ConfigurationError, match=r"upgrade obsjobs"):
        await migrate(CONNINFO, schema)


@pytest.mark.parametrize(
    "name",
    ["", "Jobs", "my-jobs", "jobs;drop", 'a"b', "1jobs", "pg_jobs", "x" * 49, "jobs.x", "ü"],
)
async def test_invalid_schema_name_rejected(name: str) -> None:
    """A schema name that is not a plain lower-case identifier is rejected before any I/O."""
    with pytest.raises(ConfigurationError, match=r"invalid schema name"):
        PostgresQueue(CONNINFO, schema=name)
    with pytest.raises(ConfigurationError, match=r"invalid schema name"):
        await migrate(CONNINFO, name)


async def test_reserved_word_schema_works() -> None:
    """A schema named like an SQL keyword works, because every use quotes it."""
    await require_server()
    name = "select"
    await drop_schema(name)
    try:
        await migrate(CONNINFO, name)
        provider = new_queue(name)
        await provider.open()
        try:
            [created] = await provider.enqueue([job()])
            [record] = await provider.claim(["default"], 1, worker_id=WORKER)
            await provider.finish(record, result(Outcome.SUCCEEDED))
        finally:
            await provider.close()
    finally:
        await drop_schema(name)

    assert record.job_id == created.job_id


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lease_s", 0),
        ("lease_s", -1.0),
        ("poll_interval_s", 0),
        ("connect_timeout_s", float("nan")),
        ("max_payload_bytes", 0),
        ("pool_min_size", -1),
        ("pool_max_size", 0),
        ("retention", timedelta(0)),
    ],
)
def test_constructor_rejects_bad_option(option: str, value: Any) -> None:
    """A non-positive size or duration raises ValueError naming the parameter."""
    with pytest.raises(ValueError, match=rf"^{option} must be"):
        PostgresQueue(CONNINFO, **{option: value})


def test_missing_driver_names_extra() -> None:
    """Without psycopg, obsjobs imports and PostgresQueue() names the extra to install."""
    script = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "sys.modules['psycopg_pool'] = None\n"
        "import obsjobs\n"
        "from obsjobs.providers.postgres import PostgresQueue\n"
        "try:\n"
        "    obsjobs.PostgresQueue('host=127.0.0.1')\n"
        "except obsjobs.ConfigurationError as error:\n"
        "    print(error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert "pip install 'obsjobs[postgres]'" in completed.stdout


async def test_unreachable_server_raises_unavailable() -> None:
    """open() against a closed port raises ProviderUnavailableError chained to psycopg."""
    provider = PostgresQueue(
        "host=127.0.0.1 port=1 dbname=test user=postgres", connect_timeout_s=1.0
    )

    with pytest.raises(ProviderUnavailableError) as raised:
        await provider.open()

    assert isinstance(raised.value.__cause__, psycopg.Error)
    assert raised.value.provider == "postgres"


# Enqueue ----------------------------------------------------------------------------------


async def test_enqueue_closure_raises_job_error(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A job carrying a function is rejected with a JobError, and nothing is stored."""

    async def closure(state: object) -> None:
        return None

    with pytest.raises(JobError, match=r"durable providers .* register it with @engine.job"):
        await queue.enqueue(
            [job(), NewJob(name="tests.closure", queue="default", function=closure)]
        )

    assert await fetch_one(db, "SELECT count(*) FROM jobs") == 0


async def test_enqueue_oversized_payload_stores_nothing(
    schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """A batch with one job over max_payload_bytes raises and stores none of the batch."""
    provider = new_queue(schema, max_payload_bytes=100)
    await provider.open()
    try:
        with pytest.raises(PayloadTooLargeError) as raised:
            await provider.enqueue([job(args=["small"]), job(args=["x" * 200])])
    finally:
        await provider.close()

    assert raised.value.max_bytes == 100
    assert raised.value.size_bytes > 100
    assert raised.value.job == "tests.job"
    assert await fetch_one(db, "SELECT count(*) FROM jobs") == 0


async def test_enqueue_payload_at_limit_accepted(schema: str) -> None:
    """A job exactly max_payload_bytes long, counting args, kwargs and headers, is stored."""
    # ["é"] is 6 bytes as UTF-8 JSON, {} is 2 and {} is 2: 10 bytes in all.
    provider = new_queue(schema, max_payload_bytes=10)
    await provider.open()
    try:
        [created] = await provider.enqueue([job(args=["é"])])
        with pytest.raises(PayloadTooLargeError):
            await provider.enqueue([job(args=["éa"])])
    finally:
        await provider.close()

    assert created.created


def test_default_max_payload_is_one_mebibyte() -> None:
    """The default payload limit is 1 MiB."""
    from obsjobs.providers.postgres import DEFAULT_MAX_PAYLOAD_BYTES

    assert DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024


async def test_enqueue_arguments_round_trip_exactly(queue: PostgresQueue) -> None:
    """Arguments come back equal and in the same key order, NUL and non-ASCII included."""
    kwargs: dict[str, Any] = {
        "zeta": "nul\x00byte",
        "alpha": 'é ☃ 𝄞 "quoted" \\ \n',
        "big": 2**70,
        "float": 0.1,
        "nested": {"b": [1, None, True], "a": {}},
    }
    await queue.enqueue([job(args=[-0.5, [], "x"], kwargs=kwargs)])

    [record] = await queue.claim(["default"], 1, worker_id=WORKER)

    assert record.args == [-0.5, [], "x"]
    assert record.kwargs == kwargs
    assert list(record.kwargs) == list(kwargs)
    assert list(record.kwargs["nested"]) == ["b", "a"]


async def test_enqueue_lone_surrogate_raises(queue: PostgresQueue) -> None:
    """Text PostgreSQL cannot store as UTF-8 raises JobArgumentsError before any write."""
    with pytest.raises(JobArgumentsError, match=r"lone surrogate"):
        await queue.enqueue([job(args=["\ud800"])])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"priority": 2**31}, r"priority must be an int"),
        ({"max_attempts": 0}, r"max_attempts must be an int from 1"),
        ({"run_at": datetime(2030, 1, 1)}, r"run_at must be timezone-aware"),
    ],
)
async def test_enqueue_rejects_unstorable_fields(
    queue: PostgresQueue, fields: dict[str, Any], message: str
) -> None:
    """Fields the table cannot hold raise ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        await queue.enqueue([job(**fields)])


async def test_enqueue_assigns_ids_in_order(queue: PostgresQueue) -> None:
    """Ids of one batch are distinct decimal strings that grow in batch order."""
    results = await queue.enqueue([job(args=[index]) for index in range(50)])
    ids = [int(result.job_id) for result in results]

    assert ids == sorted(ids)
    assert len(set(ids)) == 50


async def test_concurrent_unique_key_creates_one(schema: str, queue: PostgresQueue) -> None:
    """Racing enqueues of one unique key from many connections create exactly one job."""
    providers = [new_queue(schema) for _ in range(4)]
    await asyncio.gather(*(provider.open() for provider in providers))
    try:
        results = await asyncio.gather(
            *(
                provider.enqueue([job(unique_key="report:7", args=[index])])
                for index in range(5)
                for provider in (queue, *providers)
            )
        )
    finally:
        await asyncio.gather(*(provider.close() for provider in providers))
    flat = [entry for batch in results for entry in batch]

    assert sum(entry.created for entry in flat) == 1
    assert len({entry.job_id for entry in flat}) == 1


async def test_unique_key_is_global_across_queues(queue: PostgresQueue) -> None:
    """A unique key is shared by all queues, as in the in-memory provider."""
    [first] = await queue.enqueue([job("mail", unique_key="k")])
    [second] = await queue.enqueue([job("images", unique_key="k")])

    assert (second.job_id, second.created) == (first.job_id, False)


# The caller's transaction -------------------------------------------------------------


async def test_enqueue_in_commit_stores_job(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """Jobs enqueued in the caller's transaction exist after it commits."""
    connect = psycopg.AsyncConnection.connect(CONNINFO)
    async with await connect as connection, connection.transaction():
        [created] = await queue.enqueue_in(connection, [job()])
        invisible = await fetch_one(db, "SELECT count(*) FROM jobs")

    assert invisible == 0
    assert (await job_row(db, created.job_id))["state"] == "waiting"


async def test_enqueue_in_rollback_stores_nothing(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """Jobs enqueued in a transaction that rolls back never exist."""
    async with await psycopg.AsyncConnection.connect(CONNINFO) as connection:
        with pytest.raises(RuntimeError):
            async with connection.transaction():
                await queue.enqueue_in(connection, [job(), job(unique_key="k")])
                raise RuntimeError("the caller's work failed")

    assert await fetch_one(db, "SELECT count(*) FROM jobs") == 0


async def test_enqueue_in_needs_no_open_provider(
    schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """enqueue_in() works on a provider that was never opened (a producer-only process)."""
    producer = new_queue(schema)
    connect = psycopg.AsyncConnection.connect(CONNINFO)
    async with await connect as connection, connection.transaction():
        [created] = await producer.enqueue_in(connection, [job()])

    assert (await job_row(db, created.job_id))["name"] == "tests.job"


async def test_enqueue_in_rejects_sync_connection(queue: PostgresQueue) -> None:
    """enqueue_in() and transaction() accept only a psycopg AsyncConnection."""
    with psycopg.Connection.connect(CONNINFO) as connection:
        with pytest.raises(TypeError, match=r"connection must be a psycopg.AsyncConnection"):
            await queue.enqueue_in(connection, [job()])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"connection must be a psycopg.AsyncConnection"):
            queue.transaction(connection)  # type: ignore[arg-type]


async def test_transaction_block_routes_enqueue(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """enqueue() inside transaction() commits with the block, and rolls back with it."""
    async with await psycopg.AsyncConnection.connect(CONNINFO) as connection:
        async with queue.transaction(connection):
            [kept] = await queue.enqueue([job(args=["kept"])])
        with pytest.raises(RuntimeError):
            async with queue.transaction(connection):
                await queue.enqueue([job(args=["lost"])])
                raise RuntimeError("the caller's work failed")
        [outside] = await queue.enqueue([job(args=["outside"])])

    cursor = await db.execute(b"SELECT id, args::text FROM jobs ORDER BY id")
    rows = await cursor.fetchall()

    assert rows == [(int(kept.job_id), '["kept"]'), (int(outside.job_id), '["outside"]')]


async def test_transaction_block_is_savepoint(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """Inside an outer transaction, a failed transaction() block undoes only its own jobs."""
    connect = psycopg.AsyncConnection.connect(CONNINFO)
    async with await connect as connection, connection.transaction():
        await queue.enqueue_in(connection, [job(args=["outer"])])
        with pytest.raises(RuntimeError):
            async with queue.transaction(connection):
                await queue.enqueue([job(args=["inner"])])
                raise RuntimeError("inner work failed")

    cursor = await db.execute(b"SELECT args::text FROM jobs")

    assert await cursor.fetchall() == [('["outer"]',)]


async def test_transaction_ignores_other_provider(
    queue: PostgresQueue, other: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A transaction() block routes only its own provider's enqueues."""
    async with await psycopg.AsyncConnection.connect(CONNINFO) as connection:
        with pytest.raises(RuntimeError):
            async with queue.transaction(connection):
                [independent] = await other.enqueue([job()])
                raise RuntimeError("rolled back")

    assert (await job_row(db, independent.job_id))["state"] == "waiting"


# Claims ---------------------------------------------------------------------------------


async def test_claim_sets_lease_columns(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A claim stores running, attempt 1, the worker, the token and a lease on the DB clock."""
    await queue.enqueue([job()])

    [record] = await queue.claim(["default"], 1, worker_id="worker-7")
    row = await job_row(db, record.job_id)

    assert row["state"] == "running"
    assert row["attempt"] == 1
    assert row["worker_id"] == "worker-7"
    assert str(row["lease_token"]) == record.lease_token
    assert row["lease_expires_at"] - row["claimed_at"] == timedelta(seconds=LEASE_S)


async def test_claim_gives_new_token_each_time(queue: PostgresQueue) -> None:
    """A job claimed again after a release carries a new lease token."""
    await queue.enqueue([job()])
    [first] = await queue.claim(["default"], 1, worker_id=WORKER)
    await queue.finish(first, result(Outcome.RELEASED))

    [second] = await queue.claim(["default"], 1, worker_id=WORKER)

    assert second.job_id == first.job_id
    assert second.lease_token != first.lease_token


async def test_claim_nothing_for_zero_limit(queue: PostgresQueue) -> None:
    """A claim with no free capacity or no queues returns nothing and claims nothing."""
    await queue.enqueue([job()])

    assert await queue.claim(["default"], 0, worker_id=WORKER) == []
    assert await queue.claim([], 5, worker_id=WORKER) == []
    assert len(await queue.claim(["default"], 5, worker_id=WORKER)) == 1


async def test_concurrent_claims_never_overlap(schema: str, queue: PostgresQueue) -> None:
    """Claims racing from many workers hand out each job to exactly one of them."""
    await queue.enqueue([job(args=[index]) for index in range(60)])
    workers = [new_queue(schema) for _ in range(5)]
    await asyncio.gather(*(worker.open() for worker in workers))
    try:
        batches = await asyncio.gather(
            *(
                worker.claim(["default"], 7, worker_id=f"w{index}")
                for index, worker in enumerate(workers * 2)
            )
        )
        rest = await queue.claim(["default"], 100, worker_id="rest")
    finally:
        await asyncio.gather(*(worker.close() for worker in workers))
    claimed = [record.job_id for batch in (*batches, rest) for record in batch]

    assert len(claimed) == 60
    assert len(set(claimed)) == 60


async def test_claim_orders_across_queues(queue: PostgresQueue) -> None:
    """A claim over several queues takes the highest priority first, whatever the queue."""
    await queue.enqueue([job("a", args=["a0"]), job("b", args=["b5"], priority=5)])
    await queue.enqueue([job("a", args=["a9"], priority=9), job("b", args=["b0"])])

    records = await queue.claim(["a", "b"], 10, worker_id=WORKER)

    assert [record.args[0] for record in records] == ["a9", "b5", "a0", "b0"]


async def test_claim_plan_locks_only_claimed_rows(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """With a backlog, the claim walks jobs_claim_idx in order and reads only LIMIT rows."""
    await db.execute(
        b"""
        INSERT INTO jobs (queue, name, args, kwargs, headers, priority, available_at)
        SELECT 'default', 'tests.job', '[]', '{}', '{}', g % 3, now() - g * interval '1 ms'
        FROM generate_series(1, 20000) AS g
        """
    )
    await db.execute(b"ANALYZE jobs")
    query = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + queue._sql.claim_one_queue
    params = {"queue": "default", "limit": 5, "worker_id": WORKER, "lease_s": LEASE_S}

    cursor = await db.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    plan = json.dumps(row[0])
    scans = re.findall(r'"Node Type": "Index Scan"[^{}]*?"Index Name": "(\w+)"', plan)
    lock_rows = re.search(r'"Node Type": "LockRows".*?"Actual Rows": (\d+)', plan)

    assert "jobs_claim_idx" in scans
    assert '"Node Type": "Sort"' not in plan
    assert lock_rows is not None
    assert int(lock_rows.group(1)) == 5
    assert await fetch_one(db, "SELECT count(*) FROM jobs WHERE state = 'running'") == 5


# Wake-ups -------------------------------------------------------------------------------


async def test_notify_payload_is_queue_name(schema: str, queue: PostgresQueue) -> None:
    """The notification of an enqueue carries the queue name and nothing of the job."""
    async with await psycopg.AsyncConnection.connect(CONNINFO, autocommit=True) as listener:
        await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{schema}_wakeup")))
        await queue.enqueue([job("mail", args=["secret@example.org"])])
        payloads = [
            notify.payload async for notify in listener.notifies(timeout=LIVENESS_S, stop_after=1)
        ]

    assert payloads == ["mail"]


async def test_wait_wakes_on_other_enqueue(queue: PostgresQueue, other: PostgresQueue) -> None:
    """A waiting worker returns when another process enqueues to its queue."""
    assert await queue.claim(["mail"], 1, worker_id=WORKER) == []
    waiter = asyncio.create_task(queue.wait(["mail"], timeout_s=10 * LIVENESS_S))
    await asyncio.sleep(0)

    await other.enqueue([job("mail")])

    await asyncio.wait_for(waiter, LIVENESS_S)
    assert len(await queue.claim(["mail"], 1, worker_id=WORKER)) == 1


async def test_wait_returns_when_delayed_job_due(
    schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """wait() ends when the earliest delayed job falls due, with no notification sent."""
    provider = new_queue(schema, poll_interval_s=10 * LIVENESS_S)
    await provider.open()
    try:
        # Inserted without pg_notify, so only the due time can end the wait.
        await db.execute(
            b"""
            INSERT INTO jobs (queue, name, args, kwargs, headers, available_at)
            VALUES ('default', 'tests.job', '[]', '{}', '{}', now() + interval '300 ms')
            """
        )
        early = await provider.claim(["default"], 1, worker_id=WORKER)

        await asyncio.wait_for(provider.wait(["default"], timeout_s=10 * LIVENESS_S), LIVENESS_S)
        records = await provider.claim(["default"], 1, worker_id=WORKER)
    finally:
        await provider.close()

    assert early == []
    assert len(records) == 1


async def test_wait_wakes_on_retry_and_rescue(
    queue: PostgresQueue, other: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """Rescued jobs wake waiting workers, so they are claimed without polling."""
    await queue.enqueue([job(max_attempts=2)])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)
    await expire_leases(db, [record.job_id])
    assert await other.claim(["default"], 1, worker_id="other") == []
    waiter = asyncio.create_task(other.wait(["default"], timeout_s=10 * LIVENESS_S))
    await asyncio.sleep(0)

    [rescued] = await queue.rescue()

    await asyncio.wait_for(waiter, LIVENESS_S)
    assert rescued.job_id == record.job_id


async def test_wait_after_close_returns(schema: str) -> None:
    """close() wakes a task blocked in wait(), so a stopping worker never hangs."""
    provider = new_queue(schema)
    await provider.open()
    waiter = asyncio.create_task(provider.wait(["default"], timeout_s=10 * LIVENESS_S))
    await asyncio.sleep(0.05)

    await provider.close()

    await asyncio.wait_for(waiter, LIVENESS_S)


# Leases and results ---------------------------------------------------------------------


async def test_renew_extends_lease_in_database(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """renew() moves lease_expires_at forward for the claim still holding the job."""
    await queue.enqueue([job()])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)
    await db.execute(b"UPDATE jobs SET lease_expires_at = now() + interval '100 ms'")

    lost = await queue.renew([record])
    row = await job_row(db, record.job_id)

    assert lost == []
    assert row["lease_expires_at"] > datetime.now(UTC) + timedelta(seconds=LEASE_S / 2)


async def test_renew_reports_lost_and_foreign(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """renew() returns ids whose token changed, and ids this provider never issued."""
    await queue.enqueue([job(max_attempts=3), job()])
    stale, kept = await queue.claim(["default"], 2, worker_id=WORKER)
    await expire_leases(db, [stale.job_id])
    await queue.rescue()
    foreign = JobRecord(**{**_fields(kept), "job_id": "memory-1", "lease_token": ""})

    lost = await queue.renew([stale, kept, foreign])

    assert lost == ["memory-1", stale.job_id]


async def test_renew_after_own_finish_not_lost(queue: PostgresQueue) -> None:
    """A renewal racing with its own claim's result does not report the lease lost."""
    await queue.enqueue([job(max_attempts=3), job(max_attempts=3)])
    succeeded, retried = await queue.claim(["default"], 2, worker_id=WORKER)
    await queue.finish(succeeded, result(Outcome.SUCCEEDED))
    await queue.finish(retried, result(Outcome.RETRY, error="again"))

    lost = await queue.renew([succeeded, retried])

    assert lost == []


def _fields(record: JobRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in JobRecord.__dataclass_fields__}


async def test_finish_wrong_token_never_overwrites(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """finish() with a token that does not match raises LeaseLostError and writes nothing."""
    await queue.enqueue([job()])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)
    impostor = JobRecord(
        **{**_fields(record), "lease_token": "00000000-0000-0000-0000-000000000000"}
    )

    for outcome in Outcome:
        with pytest.raises(LeaseLostError, match=rf"job {record.job_id} .*not recorded"):
            await queue.finish(impostor, result(outcome, error="stale"))
    row = await job_row(db, record.job_id)

    assert row["state"] == "running"
    assert str(row["lease_token"]) == record.lease_token
    assert row["last_error"] is None


async def test_finish_after_rescue_raises_lease_lost(
    queue: PostgresQueue, other: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A worker whose job was rescued and claimed again cannot record its result."""
    await queue.enqueue([job(max_attempts=3)])
    [stale] = await queue.claim(["default"], 1, worker_id="slow")
    await expire_leases(db, [stale.job_id])
    await other.rescue()
    [current] = await other.claim(["default"], 1, worker_id="fast")

    with pytest.raises(LeaseLostError):
        await queue.finish(stale, result(Outcome.SUCCEEDED))
    row = await job_row(db, current.job_id)

    assert (row["state"], row["worker_id"], row["attempt"]) == ("running", "fast", 2)
    assert str(row["lease_token"]) == current.lease_token


async def test_finish_twice_raises_lease_lost(queue: PostgresQueue) -> None:
    """A second finish() for one claim raises LeaseLostError: the claim has ended."""
    await queue.enqueue([job()])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)
    await queue.finish(record, result(Outcome.SUCCEEDED))

    with pytest.raises(LeaseLostError):
        await queue.finish(record, result(Outcome.SUCCEEDED))


async def test_finish_succeeded_records_time(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A success sets state succeeded and finished_at, ends the lease and keeps the token."""
    await queue.enqueue([job()])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)

    await queue.finish(record, result(Outcome.SUCCEEDED))
    row = await job_row(db, record.job_id)

    assert row["state"] == "succeeded"
    assert row["finished_at"] is not None
    assert row["lease_expires_at"] is None
    assert str(row["lease_token"]) == record.lease_token


async def test_concurrent_successes_share_writes(queue: PostgresQueue) -> None:
    """Successes reported at once are written in far fewer UPDATEs than jobs."""
    await queue.enqueue([job(args=[index]) for index in range(200)])
    records = await queue.claim(["default"], 200, worker_id=WORKER)
    writes: list[int] = []
    write = queue._write_successes

    async def counting_write(ids: list[int], tokens: list[Any]) -> set[int]:
        writes.append(len(ids))
        return await write(ids, tokens)

    queue._successes._flush = counting_write
    await asyncio.gather(*(queue.finish(record, result(Outcome.SUCCEEDED)) for record in records))
    stats = await queue.stats()

    assert sum(writes) == 200
    assert len(writes) < 20
    assert stats == [QueueStats("default")]


async def test_finish_retry_stores_error_and_time(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """RETRY makes the job wait until retry_at, with the error kept."""
    await queue.enqueue([job(max_attempts=3)])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)
    retry_at = datetime.now(UTC) + timedelta(hours=1)

    await queue.finish(
        record, result(Outcome.RETRY, error="boom", error_type="RuntimeError", retry_at=retry_at)
    )
    row = await job_row(db, record.job_id)

    assert row["state"] == "waiting"
    assert row["available_at"] == retry_at
    assert (row["last_error"], row["last_error_type"]) == ("boom", "RuntimeError")
    assert row["attempt"] == 1
    assert (await queue.stats())[0].scheduled == 1


async def test_finish_dead_stores_error(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """DEAD keeps the job as dead with its error and finished_at."""
    await queue.enqueue([job()])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)

    await queue.finish(
        record, result(Outcome.DEAD, error="ValueError: no", error_type="ValueError")
    )
    row = await job_row(db, record.job_id)
    [dead] = await queue.dead_jobs()

    assert (row["state"], row["last_error"]) == ("dead", "ValueError: no")
    assert row["finished_at"] is not None
    assert (dead.job_id, dead.error, dead.failed_at) == (
        record.job_id,
        "ValueError: no",
        row["finished_at"],
    )


@pytest.mark.parametrize("outcome", [Outcome.CANCELLED, Outcome.RELEASED])
async def test_give_back_uncounts_attempt(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any], outcome: Outcome
) -> None:
    """CANCELLED and RELEASED put the job back ready with the attempt taken back."""
    await queue.enqueue([job(max_attempts=2)])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)

    await queue.finish(record, result(outcome, error="cancelled"))
    row = await job_row(db, record.job_id)

    assert (row["state"], row["attempt"], row["lease_expires_at"]) == ("waiting", 0, None)
    assert row["available_at"] == record.available_at


async def test_rescue_returns_expired_to_queue(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """rescue() puts an expired job back, due now, with the lost worker in last_error."""
    await queue.enqueue([job(max_attempts=3)])
    [record] = await queue.claim(["default"], 1, worker_id="worker-lost")
    assert await queue.rescue() == []
    await expire_leases(db, [record.job_id])

    [rescued] = await queue.rescue()
    row = await job_row(db, record.job_id)

    assert (rescued.job_id, rescued.attempt, rescued.dead) == (record.job_id, 1, False)
    assert (rescued.name, rescued.queue) == ("tests.job", "default")
    assert row["state"] == "waiting"
    assert row["last_error"] == "lease expired: worker worker-lost stopped renewing it"
    assert row["lease_token"] is None


async def test_rescue_buries_last_attempt(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """An expired job that used its last attempt becomes dead."""
    await queue.enqueue([job(max_attempts=1)])
    [record] = await queue.claim(["default"], 1, worker_id=WORKER)
    await expire_leases(db, [record.job_id])

    [rescued] = await queue.rescue()
    row = await job_row(db, record.job_id)

    assert rescued.dead
    assert row["state"] == "dead"
    assert row["finished_at"] is not None


async def test_concurrent_rescues_split_jobs(
    schema: str, queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """Many workers rescuing at once return each expired job exactly once."""
    await queue.enqueue([job(max_attempts=3) for _ in range(50)])
    records = await queue.claim(["default"], 50, worker_id=WORKER)
    await expire_leases(db, [record.job_id for record in records])
    rescuers = [new_queue(schema) for _ in range(5)]
    await asyncio.gather(*(rescuer.open() for rescuer in rescuers))
    try:
        batches = await asyncio.gather(*(rescuer.rescue() for rescuer in rescuers))
    finally:
        await asyncio.gather(*(rescuer.close() for rescuer in rescuers))
    rescued = [job.job_id for batch in batches for job in batch]

    assert sorted(rescued) == sorted(record.job_id for record in records)


# Retention, dead jobs and requeue -----------------------------------------------------


async def _finish_all(queue: PostgresQueue, outcome: Outcome) -> list[str]:
    records = await queue.claim(["default"], 100, worker_id=WORKER)
    for record in records:
        await queue.finish(record, result(outcome, error="x"))
    return [record.job_id for record in records]


async def test_prune_deletes_old_successes_only(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """prune() deletes succeeded jobs past the retention and keeps recent and dead ones."""
    await queue.enqueue([job(), job()])
    old, recent = await _finish_all(queue, Outcome.SUCCEEDED)
    await queue.enqueue([job()])
    [dead] = await _finish_all(queue, Outcome.DEAD)
    await db.execute(
        b"UPDATE jobs SET finished_at = now() - interval '8 days' WHERE id = ANY(%s)",
        ([int(old), int(dead)],),
    )

    deleted = await queue.prune()
    cursor = await db.execute(b"SELECT id FROM jobs ORDER BY id")
    remaining = [str(row[0]) for row in await cursor.fetchall()]

    assert deleted == 1
    assert remaining == [recent, dead]
    assert await queue.prune(older_than=timedelta(0)) == 1
    with pytest.raises(ValueError, match=r"older_than"):
        await queue.prune(older_than=timedelta(seconds=-1))


async def test_rescue_prunes_old_successes(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """rescue() also prunes, at most once per interval."""
    await queue.enqueue([job()])
    await _finish_all(queue, Outcome.SUCCEEDED)
    await db.execute(b"UPDATE jobs SET finished_at = now() - interval '8 days'")

    await queue.rescue()
    after_first = await fetch_one(db, "SELECT count(*) FROM jobs")
    await queue.enqueue([job()])
    await _finish_all(queue, Outcome.SUCCEEDED)
    await db.execute(b"UPDATE jobs SET finished_at = now() - interval '8 days'")
    await queue.rescue()
    after_second = await fetch_one(db, "SELECT count(*) FROM jobs")

    assert after_first == 0
    assert after_second == 1


async def test_requeue_resets_attempt(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """requeue() makes dead jobs ready again with attempt 0 and wakes workers."""
    await queue.enqueue([job(max_attempts=5)])
    [dead_id] = await _finish_all(queue, Outcome.DEAD)

    moved = await queue.requeue([dead_id, "not-an-id", "99999999999999999999", "-3"])
    row = await job_row(db, dead_id)

    assert moved == 1
    assert (row["state"], row["attempt"], row["finished_at"]) == ("waiting", 0, None)
    assert await queue.dead_jobs() == []


async def test_requeue_skips_taken_unique_key(queue: PostgresQueue) -> None:
    """A dead job whose unique key is held by a live job stays dead."""
    await queue.enqueue([job(unique_key="nightly")])
    [dead_id] = await _finish_all(queue, Outcome.DEAD)
    await queue.enqueue([job(unique_key="nightly")])

    moved = await queue.requeue([dead_id])

    assert moved == 0
    assert [dead.job_id for dead in await queue.dead_jobs()] == [dead_id]


async def test_dead_jobs_newest_first_and_limit(queue: PostgresQueue) -> None:
    """dead_jobs() lists newest first, per queue or for all, up to the limit."""
    await queue.enqueue([job(args=[index]) for index in range(3)])
    ids = await _finish_all(queue, Outcome.DEAD)

    newest = await queue.dead_jobs(limit=2)

    assert [dead.job_id for dead in newest] == list(reversed(ids))[:2]
    assert await queue.dead_jobs("other") == []
    assert await queue.dead_jobs(limit=0) == []
    with pytest.raises(ValueError, match=r"limit"):
        await queue.dead_jobs(limit=-1)


# Schedules ------------------------------------------------------------------------------

TICK = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)


def tick(schedule: str, at: datetime, unique_key: str | None = None) -> NewJob:
    """Build the job a scheduler sends for the tick of ``schedule`` at ``at``."""
    return job(schedule=schedule, scheduled_time=at, unique_key=unique_key)


async def test_concurrent_tick_enqueued_once(schema: str, queue: PostgresQueue) -> None:
    """Schedulers racing for one tick add exactly one job; the others get an empty id."""
    schedulers = [new_queue(schema) for _ in range(5)]
    await asyncio.gather(*(scheduler.open() for scheduler in schedulers))
    try:
        results = await asyncio.gather(
            *(scheduler.enqueue([tick("nightly", TICK)]) for scheduler in (queue, *schedulers))
        )
    finally:
        await asyncio.gather(*(scheduler.close() for scheduler in schedulers))
    flat = [entry for batch in results for entry in batch]

    assert sum(entry.created for entry in flat) == 1
    assert sorted(entry.job_id for entry in flat if not entry.created) == [""] * 5


async def test_last_tick_survives_restart(schema: str, queue: PostgresQueue) -> None:
    """A new provider process reads the last tick stored by another."""
    await queue.enqueue([tick("nightly", TICK)])
    restarted = new_queue(schema)
    await restarted.open()
    try:
        last = await restarted.last_tick("nightly")
        unknown = await restarted.last_tick("never")
    finally:
        await restarted.close()

    assert last == TICK
    assert unknown is None


async def test_overrun_tick_returns_running_job(queue: PostgresQueue) -> None:
    """A tick whose unique key is held returns the running job; the tick is still taken."""
    key = "obsjobs.schedule:nightly"
    [first] = await queue.enqueue([tick("nightly", TICK, key)])
    [running] = await queue.claim(["default"], 1, worker_id=WORKER)
    later = TICK + timedelta(hours=1)

    [overrun] = await queue.enqueue([tick("nightly", later, key)])
    [again] = await queue.enqueue([tick("nightly", later, key)])
    await queue.finish(running, result(Outcome.SUCCEEDED))
    [next_tick] = await queue.enqueue([tick("nightly", later + timedelta(hours=1), key)])

    assert running.job_id == first.job_id
    assert (overrun.job_id, overrun.created) == (first.job_id, False)
    assert (again.job_id, again.created) == ("", False)
    assert await queue.last_tick("nightly") == later + timedelta(hours=1)
    assert next_tick.created


async def test_tick_and_job_roll_back_together(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A tick taken in a transaction that rolls back is free again."""
    async with await psycopg.AsyncConnection.connect(CONNINFO) as connection:
        with pytest.raises(RuntimeError):
            async with connection.transaction():
                await queue.enqueue_in(connection, [tick("nightly", TICK)])
                raise RuntimeError("rolled back")

    [created] = await queue.enqueue([tick("nightly", TICK)])

    assert created.created
    assert await fetch_one(db, "SELECT count(*) FROM jobs") == 1


# Stats ----------------------------------------------------------------------------------


async def test_stats_counts_states_per_queue(queue: PostgresQueue) -> None:
    """stats() counts ready, scheduled, running and dead per queue, never succeeded."""
    later = datetime.now(UTC) + timedelta(hours=1)
    await queue.enqueue([job("a"), job("a"), job("a"), job("a"), job("a", run_at=later)])
    await queue.enqueue([job("b")])
    done, doomed, _running = await queue.claim(["a"], 3, worker_id=WORKER)
    await queue.finish(done, result(Outcome.SUCCEEDED))
    await queue.finish(doomed, result(Outcome.DEAD, error="x"))

    stats = {entry.queue: entry for entry in await queue.stats()}

    assert (stats["a"].ready, stats["a"].scheduled, stats["a"].running, stats["a"].dead) == (
        1,
        1,
        1,
        1,
    )
    assert stats["b"].ready == 1
    assert stats["a"].oldest_ready_at is not None


async def test_stats_keeps_known_empty_queue(queue: PostgresQueue) -> None:
    """A queue this provider used reports zeros after its last job finished."""
    await queue.enqueue([job("mail")])
    [record] = await queue.claim(["mail"], 1, worker_id=WORKER)
    await queue.finish(record, result(Outcome.SUCCEEDED))

    assert await queue.stats() == [QueueStats("mail")]


async def test_stats_plan_skips_finished_rows(
    queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """The stats query reads jobs_unfinished_idx only, never the succeeded history."""
    await db.execute(
        b"""
        INSERT INTO jobs (queue, name, args, kwargs, headers, state, finished_at)
        SELECT 'default', 'tests.job', '[]', '{}', '{}', 'succeeded', now()
        FROM generate_series(1, 30000)
        """
    )
    await queue.enqueue([job() for _ in range(10)])
    await db.execute(b"VACUUM ANALYZE jobs")

    cursor = await db.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + queue._sql.stats)
    row = await cursor.fetchone()
    assert row is not None
    plan = json.dumps(row[0])

    assert "jobs_unfinished_idx" in plan
    assert "Seq Scan" not in plan
    assert (await queue.stats())[0].ready == 10


# Faults and error translation -----------------------------------------------------------


async def test_pool_recovers_after_terminate(schema: str, db: psycopg.AsyncConnection[Any]) -> None:
    """After the server kills every pooled session, the next calls work on new ones."""
    name = fresh_application_name()
    provider = new_queue(schema, application_name=name, pool_min_size=2)
    await provider.open()
    try:
        await provider.enqueue([job()])
        killed = await terminate(db, name)

        records = await provider.claim(["default"], 1, worker_id=WORKER)
        await provider.finish(records[0], result(Outcome.SUCCEEDED))
        stats = await provider.stats()
    finally:
        await provider.close()

    assert killed >= 1
    assert [record.attempt for record in records] == [1]
    assert stats == [QueueStats("default")]


async def test_listener_reconnects_after_terminate(
    schema: str, other: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A killed LISTEN session is re-established, and wake-ups work again."""
    name = fresh_application_name()
    provider = new_queue(schema, application_name=name)
    await provider.open()
    try:
        await provider.wait(["mail"], timeout_s=0.01)  # the first wait starts LISTEN
        old_pids = await backend_pids(db, f"{name}-listen")
        await terminate(db, f"{name}-listen")

        async def listening_again() -> bool:
            pids = await backend_pids(db, f"{name}-listen")
            return bool(pids) and pids != old_pids

        await eventually(listening_again, "a new LISTEN session")
        await eventually(_listener_connected(provider), "the listener reporting connected")
        assert await provider.claim(["mail"], 1, worker_id=WORKER) == []
        waiter = asyncio.create_task(provider.wait(["mail"], timeout_s=10 * LIVENESS_S))
        await asyncio.sleep(0)
        await other.enqueue([job("mail")])
        await asyncio.wait_for(waiter, LIVENESS_S)
    finally:
        await provider.close()

    assert len(old_pids) == 1


async def test_producer_opens_no_listen_session(
    schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """A provider that only enqueues has no LISTEN session until its first wait."""
    name = fresh_application_name()
    provider = new_queue(schema, application_name=name)
    await provider.open()
    try:
        await provider.enqueue([job("mail")])
        before_wait = await backend_pids(db, f"{name}-listen")
        await provider.wait(["other"], timeout_s=0.01)
        after_wait = await backend_pids(db, f"{name}-listen")
    finally:
        await provider.close()

    assert before_wait == []
    assert len(after_wait) == 1


def _listener_connected(provider: PostgresQueue) -> Any:
    async def check() -> bool:
        return provider._listener is not None and provider._listener.connected

    return check


async def test_killed_session_enqueue_raises_unavailable(
    schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """An enqueue that hits a killed session raises ProviderUnavailableError, not psycopg's."""
    name = fresh_application_name()
    provider = new_queue(schema, application_name=name, pool_min_size=1, pool_max_size=1)
    await provider.open()
    try:
        await provider.enqueue([job()])
        await terminate(db, name)
        try:
            await provider.enqueue([job()])
        except ProviderUnavailableError as error:
            assert isinstance(error.__cause__, psycopg.OperationalError)
        after = await provider.enqueue([job()])
    finally:
        await provider.close()

    assert after[0].created


async def test_driver_errors_are_translated(
    schema: str, queue: PostgresQueue, db: psycopg.AsyncConnection[Any]
) -> None:
    """A failing statement raises ProviderError chained to the psycopg error."""
    await db.execute(b"DROP TABLE jobs CASCADE")

    with pytest.raises(ProviderError, match=r"PostgreSQL failed to read queue stats") as raised:
        await queue.stats()
    with pytest.raises(ProviderError) as raised_enqueue:
        await queue.enqueue([job()])

    assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedTable)
    assert isinstance(raised_enqueue.value.__cause__, psycopg.errors.UndefinedTable)
    assert not isinstance(raised.value, ProviderUnavailableError)


async def test_calls_after_close_raise_unavailable(schema: str) -> None:
    """Calls on a closed provider raise ProviderUnavailableError naming open()."""
    provider = new_queue(schema)
    await provider.open()
    await provider.close()
    await provider.close()

    with pytest.raises(ProviderUnavailableError, match=r"not open: call open\(\)"):
        await provider.stats()
    with pytest.raises(ProviderUnavailableError, match=r"not open"):
        await provider.enqueue([job()])
    with pytest.raises(ProviderUnavailableError, match=r"not open"):
        await provider.claim(["default"], 1, worker_id=WORKER)


async def test_reopen_after_close_works(schema: str) -> None:
    """A closed provider can be opened again and finds its stored jobs."""
    provider = new_queue(schema)
    await provider.open()
    await provider.enqueue([job()])
    await provider.close()

    await provider.open()
    try:
        records = await provider.claim(["default"], 1, worker_id=WORKER)
    finally:
        await provider.close()

    assert len(records) == 1


async def test_provider_identity_properties(queue: PostgresQueue, schema: str) -> None:
    """The provider is named postgres, durable, with the lease it was given."""
    assert queue.name == "postgres"
    assert queue.durable is True
    assert queue.lease_s == LEASE_S
    assert queue.schema == schema
