"""The PostgreSQL provider: durable, at-least-once job storage with leases.

Install with ``pip install 'obsjobs[postgres]'``, and create the tables once per database
with ``obsjobs migrate`` or :func:`migrate` before workers start.

The driver is psycopg 3 with psycopg-pool rather than asyncpg. Both bind parameters on
the server, and psycopg also composes the parts that cannot be parameters:
:mod:`psycopg.sql` quotes the configurable schema name as an identifier, so every
statement stays a literal string with every value bound. psycopg also gives
LISTEN/NOTIFY as an async iterator on an ordinary connection, a maintained async pool
with connection checks and reconnection, pipeline mode and COPY. An application that
already talks to PostgreSQL through psycopg 3 (directly, or under SQLAlchemy's psycopg
dialect) can pass its own connection to :meth:`PostgresQueue.enqueue_in`, so a job
commits or rolls back with the application's transaction.

Modules of this provider: ``postgres_settings``, ``postgres_sql`` (statements and job
states), ``postgres_migrations``, ``postgres_pool``, ``postgres_enqueue``,
``postgres_listen`` (wake-ups), ``postgres_jobs`` (rows and the success batcher),
``postgres_admin`` (stats, pruning) and ``postgres_errors``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, Final, final

import structlog

from obsjobs.errors import ConfigurationError, ProviderError, ProviderUnavailableError
from obsjobs.protocols import (
    DeadJob,
    EnqueueResult,
    JobRecord,
    JobResult,
    NewJob,
    Outcome,
    QueueStats,
    RescuedJob,
)
from obsjobs.providers.postgres_settings import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_POOL_MAX_SIZE,
    DEFAULT_POOL_MIN_SIZE,
    DEFAULT_RETENTION,
    DEFAULT_SCHEMA,
    Settings,
)

_DRIVER_ERROR: ImportError | None = None
try:
    import psycopg
    from psycopg import sql

    from obsjobs.providers import postgres_migrations
    from obsjobs.providers.postgres_admin import Maintenance
    from obsjobs.providers.postgres_enqueue import (
        bind_transaction,
        bound_connection,
        check_connection_type,
        enqueue_in_transaction,
        enqueue_pooled,
    )
    from obsjobs.providers.postgres_errors import PROVIDER_NAME
    from obsjobs.providers.postgres_jobs import (
        SuccessBatcher,
        encode_jobs,
        lease_lost,
        parse_held,
        record_from_row,
        result_statement,
    )
    from obsjobs.providers.postgres_listen import Listener, Mark, WakeBoard, wait_timeout
    from obsjobs.providers.postgres_pool import Pool
    from obsjobs.providers.postgres_sql import Statements
except ImportError as error:  # the postgres extra is not installed
    _DRIVER_ERROR = error

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_RETENTION",
    "DEFAULT_SCHEMA",
    "PostgresQueue",
    "migrate",
]

PRUNE_INTERVAL_S: Final = 300.0
"""How often :meth:`PostgresQueue.rescue` also prunes old successes, per process."""
PRUNE_MAX_BATCHES_IN_RESCUE: Final = 10
RESCUE_BATCH: Final = 1_000

_log = structlog.get_logger("obsjobs.postgres")


def _require_driver() -> None:
    if _DRIVER_ERROR is not None:
        raise ConfigurationError(
            "the PostgreSQL provider needs psycopg 3 and psycopg-pool, which are not "
            "installed: pip install 'obsjobs[postgres]'"
        ) from _DRIVER_ERROR


async def migrate(conninfo: str, schema: str = DEFAULT_SCHEMA) -> int:
    """Create or upgrade the provider's tables in ``schema``; return the schema version.

    Idempotent, and safe to run from several processes at once (an advisory lock
    serializes them). Run it at deploy time, before workers start.

    Raises:
        ConfigurationError: psycopg is missing, the schema name is invalid, or the
            database was migrated by a newer obsjobs.
        ProviderError: the database failed; nothing was applied.
    """
    _require_driver()
    return await postgres_migrations.apply_migrations(
        conninfo, schema, application_name="obsjobs-migrate"
    )


@final
class PostgresQueue:
    """Jobs stored in PostgreSQL: durable, at least once, shared by any number of workers.

    - Claims lock rows with ``FOR UPDATE SKIP LOCKED``, highest priority first, then
      earliest due, then oldest. Each claim gets a new random lease token and a lease of
      ``lease_s`` seconds on the database clock, which the engine renews while the job
      runs. A worker that dies leaves its jobs to :meth:`rescue` once the lease expires,
      so every job runs at least once; make jobs idempotent.
    - Idle workers wake through LISTEN/NOTIFY within milliseconds of an enqueue, and
      poll every ``poll_interval_s`` in case a wake-up is lost.
    - Succeeded jobs are kept for ``retention`` and then deleted by :meth:`prune`, which
      :meth:`rescue` runs every few minutes. Dead jobs are kept until requeued.
    - Jobs can be enqueued inside the caller's own transaction with
      :meth:`transaction` or :meth:`enqueue_in`.
    - Closures are rejected: a job is stored as its registered name and JSON arguments.

    Args:
        conninfo: a libpq connection string or URI.
        schema: the schema holding the tables; a plain lower-case identifier.
        lease_s: how long a claim is held without renewal.
        max_payload_bytes: the largest job, as UTF-8 JSON of arguments and headers.
        pool_min_size: connections kept open; the LISTEN connection is one more.
        pool_max_size: the maximum number of connections the pool opens.
        poll_interval_s: the longest :meth:`wait` sleeps without a notification.
        retention: how long succeeded jobs are kept.
        application_name: the ``application_name`` of the pool's connections, for
            ``pg_stat_activity``; the LISTEN connection adds ``-listen``.
            ``obsjobs-<pid>`` by default.
        connect_timeout_s: how long :meth:`open` and each connection wait for the server.

    Raises:
        ConfigurationError: psycopg is not installed, or the schema name is invalid.
        ValueError: a size or duration that is not positive.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        lease_s: float = DEFAULT_LEASE_S,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        pool_min_size: int = DEFAULT_POOL_MIN_SIZE,
        pool_max_size: int = DEFAULT_POOL_MAX_SIZE,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        retention: timedelta = DEFAULT_RETENTION,
        application_name: str | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        _require_driver()
        self._settings = Settings.check(
            conninfo,
            schema=schema,
            lease_s=lease_s,
            max_payload_bytes=max_payload_bytes,
            pool_min_size=pool_min_size,
            pool_max_size=pool_max_size,
            poll_interval_s=poll_interval_s,
            retention=retention,
            application_name=application_name,
            connect_timeout_s=connect_timeout_s,
        )
        self._sql = Statements(schema)
        self._pool: Pool | None = None
        self._listener: Listener | None = None
        self._listening = False
        self._board = WakeBoard()
        self._marks: dict[tuple[str, ...], Mark] = {}
        self._known_queues: set[str] = set()
        self._successes = SuccessBatcher(self._write_successes)
        self._admin = Maintenance(self._fetch, self._sql, self._known_queues)
        self._next_prune = 0.0

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def durable(self) -> bool:
        return True

    @property
    def lease_s(self) -> float | None:
        return self._settings.lease_s

    @property
    def schema(self) -> str:
        """The schema holding this provider's tables."""
        return self._sql.schema

    async def migrate(self) -> int:
        """Create or upgrade this provider's tables; see :func:`migrate`."""
        return await migrate(self._settings.conninfo, self._sql.schema)

    # Life cycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool after checking the schema version; LISTEN starts on first wait().

        Idempotent. Migrations are never run here.

        Raises:
            ConfigurationError: the schema is missing or behind: run ``obsjobs migrate``.
            ProviderUnavailableError: the server cannot be reached.
        """
        if self._pool is not None:
            return
        settings = self._settings
        pool = Pool(settings)
        listener = Listener(
            settings.conninfo,
            self._sql.listen,
            self._board,
            application_name=f"{settings.application_name}-listen",
            connect_timeout_s=settings.connect_timeout_s,
        )
        await pool.open()
        # The LISTEN connection starts on the first wait(), so that a producer that only
        # enqueues keeps no connection open that it never reads.
        self._pool, self._listener = pool, listener
        self._listening = False
        _log.info(
            "postgres.opened", schema=self._sql.schema, application_name=settings.application_name
        )

    async def close(self) -> None:
        """Write pending results, stop listening, wake waiters and close the pool.

        Idempotent. Jobs stay stored, so the provider can be opened again.
        """
        pool = self._pool
        if pool is None:
            self._board.notify_all()
            return
        await self._successes.close()
        if self._listener is not None:
            await self._listener.stop()
        self._pool, self._listener = None, None
        self._board.notify_all()
        await pool.close()
        _log.info("postgres.closed", schema=self._sql.schema)

    def _require_pool(self) -> Pool:
        if self._pool is None:
            raise ProviderUnavailableError(
                "PostgresQueue is not open: call open() first (the engine does this on start)",
                provider=PROVIDER_NAME,
            )
        return self._pool

    async def _fetch(
        self, action: str, query: sql.Composed, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        return await self._require_pool().fetch(action, query, params)

    # Enqueueing ---------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Store ``jobs`` all together or not at all, in one round trip when possible.

        Inside :meth:`transaction`, the jobs go into the caller's transaction instead.
        A unique key already held by a waiting or running job returns that job's id with
        ``created=False``; a schedule tick already taken returns ``EnqueueResult("",
        created=False)``. Either way nothing is added.

        Raises:
            JobError: a job is a closure; durable providers need registered jobs.
            PayloadTooLargeError: a job is larger than ``max_payload_bytes``.
            ProviderError: the database failed; nothing was stored.
        """
        if not jobs:
            return []
        connection = bound_connection(self)
        if connection is not None:
            return await self.enqueue_in(connection, jobs)
        columns = encode_jobs(jobs, self._settings.max_payload_bytes)
        pool = self._require_pool()
        self._known_queues.update(job.queue for job in jobs)
        return await enqueue_pooled(pool, self._sql, jobs, columns)

    async def enqueue_in(
        self, connection: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob]
    ) -> list[EnqueueResult]:
        """Store ``jobs`` through the caller's connection, inside its transaction.

        The jobs exist if and only if the caller's transaction commits, and workers are
        woken at that commit. Inside a transaction the jobs are written under a
        savepoint; on an idle connection they are committed at once. The provider need
        not be open. Build jobs with a registered job's ``message()``::

            async with conn.transaction():
                await conn.execute("INSERT INTO orders ...")
                await queue.enqueue_in(conn, [send_receipt.message(order_id=42)])

        This path records no producer span and bypasses the middleware chain. Use
        :meth:`transaction` to enqueue through the engine instead.

        Raises:
            TypeError: ``connection`` is not a psycopg ``AsyncConnection``.
            JobError, PayloadTooLargeError, ProviderError: as for :meth:`enqueue`.
        """
        check_connection_type(connection)
        if not jobs:
            return []
        columns = encode_jobs(jobs, self._settings.max_payload_bytes)
        self._known_queues.update(job.queue for job in jobs)
        return await enqueue_in_transaction(connection, self._sql, jobs, columns)

    def transaction(
        self, connection: psycopg.AsyncConnection[Any]
    ) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """Open a transaction on ``connection`` and send this task's enqueues through it.

        Inside the ``async with`` block, every :meth:`enqueue` on this provider made by
        the current task (``await send_email.enqueue(...)``, ``engine.enqueue_many``)
        writes through ``connection``, so the jobs commit or roll back with the
        caller's own changes, with the engine's producer span and metrics as usual. On
        a connection already in a transaction, the block is a savepoint.

        NOTE: the metrics middleware counts jobs when enqueue returns, so jobs of a
        transaction that later rolls back are still counted as enqueued.

        Example::

            async with queue.transaction(conn):
                await conn.execute("INSERT INTO orders ...")
                await send_receipt.enqueue(order_id=42)

        Raises:
            TypeError: ``connection`` is not a psycopg ``AsyncConnection``.
        """
        return bind_transaction(self, check_connection_type(connection))

    # Claiming and waiting -----------------------------------------------------------

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str) -> list[JobRecord]:
        """Claim up to ``limit`` due jobs from ``queues`` in one statement.

        Only the claimed rows are locked. NOTE: with one queue (and table statistics)
        the planner walks jobs_claim_idx in order and stops after ``limit`` rows. With
        several queues PostgreSQL 15 cannot merge the per-queue index ranges in order,
        so it sorts the due jobs of those queues first, at a cost that grows with their
        backlog.
        """
        if limit <= 0 or not queues:
            return []
        self._marks[tuple(queues)] = self._board.mark(queues)
        self._known_queues.update(queues)
        params: dict[str, Any] = {
            "limit": limit,
            "worker_id": worker_id,
            "lease_s": self._settings.lease_s,
        }
        if len(queues) == 1:
            query = self._sql.claim_one_queue
            params["queue"] = queues[0]
        else:
            query = self._sql.claim_many_queues
            params["queues"] = list(queues)
        rows = await self._fetch("claim jobs", query, params)
        records = [record_from_row(row) for row in rows]
        records.sort(key=lambda job: (-job.priority, job.available_at, int(job.job_id)))
        return records

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return on a notification for ``queues``, when a delayed job falls due, or on timeout.

        A notification that arrived since the last :meth:`claim` of the same queues
        returns at once. Otherwise the wait is at most ``poll_interval_s`` (1 s while
        the LISTEN connection is reconnecting) and ends when the earliest waiting job of
        ``queues`` falls due, by the database clock.
        """
        if not self._listening and self._listener is not None:
            # A job enqueued before LISTEN took effect is not announced, but the due-time
            # query below runs after it and sees that job, so nothing is missed.
            self._listening = True
            try:
                await self._listener.start()
            except BaseException:
                self._listening = False
                raise
        mark = self._marks.get(tuple(queues))
        if mark is None:
            mark = self._board.mark(queues)
        elif self._board.changed(mark, queues):
            return
        listening = self._listener is not None and self._listener.connected
        due_in_s = await self._seconds_until_due(queues)
        timeout = wait_timeout(timeout_s, self._settings.poll_interval_s, listening, due_in_s)
        # A notification may have come in while the due time was read.
        if self._board.changed(mark, queues):
            return
        await self._board.wait(queues, timeout)

    async def _seconds_until_due(self, queues: Sequence[str]) -> float | None:
        try:
            rows = await self._fetch(
                "find the next due job", self._sql.seconds_until_due, {"queues": list(queues)}
            )
        except ProviderError as error:
            # Waiting the poll interval is the safe fallback; the next claim reports the
            # failure to the engine.
            _log.warning("postgres.next_due_failed", error=repr(error))
            return None
        return rows[0][0] if rows else None

    # Results and leases -------------------------------------------------------------

    async def finish(self, job: JobRecord, result: JobResult) -> None:
        """Record one attempt's result, if ``job.lease_token`` still matches the stored one.

        - ``SUCCEEDED`` marks the job succeeded. Concurrent successes share one write,
          and this returns only once the row is committed.
        - ``RETRY`` makes the job wait until ``retry_at``, keeping the error.
        - ``DEAD`` keeps the job as dead, with its error.
        - ``CANCELLED`` and ``RELEASED`` put it back without counting the attempt.

        Raises:
            LeaseLostError: the lease expired and the job was rescued or claimed again;
                nothing was written.
            ProviderError: the database failed; the job is rescued when its lease expires.
        """
        self._require_pool()
        try:
            job_id, token = int(job.job_id), uuid.UUID(job.lease_token)
        except ValueError:
            raise lease_lost(job, result) from None
        if result.outcome is Outcome.SUCCEEDED:
            applied = await self._successes.submit(job_id, token)
        else:
            query, params = result_statement(self._sql, job_id, token, result)
            applied = bool(await self._fetch(f"record the result of job {job_id}", query, params))
        if not applied:
            raise lease_lost(job, result)

    async def _write_successes(self, ids: list[int], tokens: list[uuid.UUID]) -> set[int]:
        rows = await self._fetch(
            "record job successes", self._sql.succeed, {"ids": ids, "tokens": tokens}
        )
        return {row[0] for row in rows}

    async def renew(self, jobs: Sequence[JobRecord]) -> list[str]:
        """Extend the leases still held by these claims; return the ids whose lease was lost.

        A job that its own claim has finished meanwhile is not reported as lost.
        """
        ids, tokens, lost = parse_held(jobs)
        if ids:
            params = {"ids": ids, "tokens": tokens, "lease_s": self._settings.lease_s}
            rows = await self._fetch("renew leases", self._sql.renew, params)
            lost.extend(str(row[0]) for row in rows)
        return lost

    async def rescue(self) -> list[RescuedJob]:
        """Return jobs with expired leases to the queue, or to dead after their last attempt.

        One statement with ``SKIP LOCKED``, at most 1,000 jobs a call, safe from any
        number of workers at once. Every ``PRUNE_INTERVAL_S`` it also prunes succeeded
        jobs older than the retention (a prune failure is logged, not raised).
        """
        params = {"limit": RESCUE_BATCH, "channel": self._sql.channel}
        rows = await self._fetch("rescue expired leases", self._sql.rescue, params)
        rescued = [RescuedJob(str(row[0]), row[1], row[2], row[3], row[4]) for row in rows]
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
            try:
                await self._admin.prune(self._settings.retention_s, PRUNE_MAX_BATCHES_IN_RESCUE)
            except ProviderError as error:
                _log.error("postgres.prune_failed", error=repr(error))
        return rescued

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Delete succeeded jobs that finished more than ``older_than`` ago; return how many.

        ``older_than`` defaults to the provider's ``retention``. Deletes in batches of
        10,000 rows until none is left.

        Raises:
            ValueError: ``older_than`` is not a timedelta of zero or more.
        """
        if older_than is None:
            return await self._admin.prune(self._settings.retention_s, None)
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ValueError(f"older_than must be a timedelta of zero or more, got {older_than!r}")
        return await self._admin.prune(older_than.total_seconds(), None)

    # Inspection ---------------------------------------------------------------------

    async def stats(self) -> list[QueueStats]:
        """Count jobs per queue and state, reading only unfinished and dead jobs.

        Queues this provider has claimed from or enqueued to are reported even with no
        jobs left, so their depth drops to zero instead of disappearing.
        """
        return await self._admin.stats()

    async def last_tick(self, schedule: str) -> datetime | None:
        """Return the schedule's last tick taken by any scheduler, kept across restarts.

        A tick counts once it is taken, even when its job was not added because the
        previous tick's job was still running (overrun skip).
        """
        return await self._admin.last_tick(schedule)

    async def dead_jobs(self, queue: str | None = None, limit: int = 100) -> list[DeadJob]:
        """Return up to ``limit`` dead jobs, newest first, from ``queue`` or from all queues."""
        return await self._admin.dead_jobs(queue, limit)

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """Move dead jobs back to ready with attempt 0; return how many moved.

        Ids that name no dead job are ignored, and so is a dead job whose unique key is
        now held by another waiting or running job.
        """
        return await self._admin.requeue(job_ids)
