"""Inserting jobs: schedule ticks, unique keys, and the caller's own transactions."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
from psycopg.rows import tuple_row

from obsjobs.errors import ProviderError
from obsjobs.protocols import EnqueueResult, NewJob
from obsjobs.providers.postgres_errors import PROVIDER_NAME, translate_errors
from obsjobs.providers.postgres_pool import Pool
from obsjobs.providers.postgres_sql import Statements

__all__ = [
    "bind_transaction",
    "bound_connection",
    "check_connection_type",
    "enqueue_in_transaction",
    "enqueue_pooled",
    "insert_jobs",
]

MAX_ENQUEUE_ROUNDS: Final = 5
"""Statements run for one batch before giving up on unique keys that keep changing hands."""

_bound: contextvars.ContextVar[tuple[object, psycopg.AsyncConnection[Any]] | None] = (
    contextvars.ContextVar("obsjobs_postgres_bound_connection", default=None)
)


def bound_connection(owner: object) -> psycopg.AsyncConnection[Any] | None:
    """Return the connection that :func:`bind_transaction` bound for ``owner`` in this task."""
    bound = _bound.get()
    if bound is None or bound[0] is not owner:
        return None
    return bound[1]


def check_connection_type(connection: object) -> psycopg.AsyncConnection[Any]:
    """Return ``connection`` if it is a psycopg ``AsyncConnection``, else raise ``TypeError``."""
    if not isinstance(connection, psycopg.AsyncConnection):
        raise TypeError(
            f"connection must be a psycopg.AsyncConnection, got {type(connection).__name__}"
        )
    return connection


@asynccontextmanager
async def bind_transaction(
    owner: object, connection: psycopg.AsyncConnection[Any]
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Open a transaction (or savepoint) on ``connection`` and bind it for ``owner``.

    Errors raised by the caller's code inside the block pass unchanged; only errors of
    the BEGIN, COMMIT or ROLLBACK that this function runs are translated.
    """
    block = connection.transaction()
    with translate_errors("begin the caller's transaction"):
        await block.__aenter__()
    token = _bound.set((owner, connection))
    try:
        yield connection
    except BaseException as error:
        _bound.reset(token)
        with translate_errors("roll back the caller's transaction"):
            await block.__aexit__(type(error), error, error.__traceback__)
        raise
    _bound.reset(token)
    with translate_errors("commit the caller's transaction"):
        await block.__aexit__(None, None, None)


def is_tick(job: NewJob) -> bool:
    """Return whether ``job`` is a schedule tick, whose enqueue first takes the tick."""
    return job.schedule is not None and job.scheduled_time is not None


def needs_transaction(jobs: Sequence[NewJob]) -> bool:
    """Return whether inserting ``jobs`` may take more than one statement.

    Ticks are taken in their own statements, and a unique key can need a second round,
    so such batches run in a transaction to stay all-or-nothing. Other batches are one
    statement, atomic on its own.
    """
    return any(job.unique_key is not None or is_tick(job) for job in jobs)


async def insert_jobs(
    connection: psycopg.AsyncConnection[Any],
    statements: Statements,
    jobs: Sequence[NewJob],
    columns: dict[str, list[Any]],
) -> list[EnqueueResult]:
    """Take the batch's schedule ticks, then insert the jobs; return a result per job.

    ``columns`` comes from :func:`obsjobs.providers.postgres_jobs.encode_jobs`. The
    caller runs this in a transaction when :func:`needs_transaction` returns true.

    Raises:
        psycopg.Error: the caller translates it.
        ProviderError: unique keys kept changing hands for ``MAX_ENQUEUE_ROUNDS`` rounds.
    """
    cursor = connection.cursor(row_factory=tuple_row)
    results: list[EnqueueResult | None] = [None] * len(jobs)
    for index, job in enumerate(jobs):
        if is_tick(job):
            await cursor.execute(
                statements.claim_tick,
                {"schedule": job.schedule, "scheduled_time": job.scheduled_time},
            )
            if await cursor.fetchone() is None:
                results[index] = EnqueueResult("", created=False)

    pending = [index for index, result in enumerate(results) if result is None]
    for _ in range(MAX_ENQUEUE_ROUNDS):
        if not pending:
            break
        params: dict[str, Any] = {
            key: [values[index] for index in pending] for key, values in columns.items()
        }
        params.update(sequence=statements.sequence, channel=statements.channel)
        await cursor.execute(statements.enqueue, params)
        for position, job_id, created in await cursor.fetchall():
            if job_id is not None:
                results[pending[position - 1]] = EnqueueResult(str(job_id), created)
        # A row left without an id conflicted with a job committed after the statement
        # began. The next statement reads that job, or inserts if it has finished since.
        pending = [index for index in pending if results[index] is None]
    if pending:
        raise ProviderError(
            f"could not enqueue {len(pending)} job(s): their unique keys were taken and "
            f"released by other transactions in each of {MAX_ENQUEUE_ROUNDS} tries",
            provider=PROVIDER_NAME,
        )
    return [result for result in results if result is not None]


async def enqueue_pooled(
    pool: Pool, statements: Statements, jobs: Sequence[NewJob], columns: dict[str, list[Any]]
) -> list[EnqueueResult]:
    """Insert ``jobs`` on a pooled connection, atomically; see :func:`insert_jobs`."""
    with translate_errors("enqueue jobs"):
        async with pool.connection() as connection:
            if not needs_transaction(jobs):
                # One statement is atomic on its own: no BEGIN/COMMIT round trips.
                return await insert_jobs(connection, statements, jobs, columns)
            async with connection.transaction():
                return await insert_jobs(connection, statements, jobs, columns)


async def enqueue_in_transaction(
    connection: psycopg.AsyncConnection[Any],
    statements: Statements,
    jobs: Sequence[NewJob],
    columns: dict[str, list[Any]],
) -> list[EnqueueResult]:
    """Insert ``jobs`` on the caller's connection, in a transaction or a savepoint."""
    with translate_errors("enqueue jobs in the caller's transaction"):
        async with connection.transaction():
            return await insert_jobs(connection, statements, jobs, columns)
