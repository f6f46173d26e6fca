"""Conversions between obsjobs job types and PostgreSQL rows, and the success batcher."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import sql

from obsjobs.errors import JobArgumentsError, JobError, LeaseLostError, PayloadTooLargeError
from obsjobs.protocols import DeadJob, JobRecord, JobResult, NewJob, Outcome
from obsjobs.providers.postgres_errors import PROVIDER_NAME
from obsjobs.providers.postgres_sql import Statements

__all__ = [
    "SuccessBatcher",
    "dead_job_from_row",
    "encode_jobs",
    "lease_lost",
    "parse_held",
    "record_from_row",
    "result_statement",
    "utc",
]

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
MAX_SUCCESS_BATCH: Final = 500
"""The maximum number of successes written by one UPDATE; more wait for the next one."""


def utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; the server sends times in the session's time zone."""
    return value.astimezone(UTC)


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _check_int32(parameter: str, job: NewJob, value: int, minimum: int = INT32_MIN) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= INT32_MAX:
        raise ValueError(
            f"job {job.name!r}: {parameter} must be an int from {minimum} to {INT32_MAX}, "
            f"got {value!r}"
        )
    return value


def _check_aware(parameter: str, job: NewJob, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"job {job.name!r}: {parameter} must be timezone-aware, got {value!r}")
    return value


def _encoded_size(job: NewJob, parts: Sequence[str]) -> int:
    try:
        return sum(len(part.encode()) for part in parts)
    except UnicodeEncodeError as error:
        # check_arguments accepts any str, but a lone surrogate (from a bad decode, say)
        # has no UTF-8 encoding, so it cannot be sent to PostgreSQL.
        raise JobArgumentsError(
            f"job {job.name!r}: an argument contains a lone surrogate ({error.reason}), "
            "which cannot be encoded as UTF-8 for PostgreSQL; pass valid Unicode text",
            job=job.name,
            argument="args or kwargs",
        ) from error


def encode_jobs(jobs: Sequence[NewJob], max_payload_bytes: int) -> dict[str, list[Any]]:
    """Check every job and return the enqueue statement's column arrays.

    Every job is checked before anything is written, so a bad job stores nothing.

    Raises:
        JobError: a job is a closure (``NewJob.function`` is set).
        PayloadTooLargeError: a job's arguments and headers, as UTF-8 JSON, are larger
            than ``max_payload_bytes``.
        JobArgumentsError: an argument contains text PostgreSQL cannot store.
        ValueError: a priority, attempt count or time that the table cannot hold.
    """
    columns: dict[str, list[Any]] = {
        key: []
        for key in (
            "queue", "name", "args", "kwargs", "headers", "priority", "max_attempts",
            "unique_key", "run_at", "schedule", "scheduled_time",
        )
    }  # fmt: skip
    for job in jobs:
        if job.function is not None:
            raise JobError(
                f"job {job.name!r} is a closure or an unregistered function, and durable "
                "providers such as postgres store a job as its registered name plus JSON "
                "arguments: register it with @engine.job and enqueue it through that",
                job=job.name,
            )
        parts = (_dump(job.args), _dump(job.kwargs), _dump(job.headers))
        size = _encoded_size(job, parts)
        if size > max_payload_bytes:
            raise PayloadTooLargeError(
                f"job {job.name!r} is {size} bytes as JSON (arguments and headers), over "
                f"the provider's max_payload_bytes of {max_payload_bytes}: store large data "
                "elsewhere and pass a reference",
                job=job.name,
                size_bytes=size,
                max_bytes=max_payload_bytes,
            )
        columns["queue"].append(job.queue)
        columns["name"].append(job.name)
        columns["args"].append(parts[0])
        columns["kwargs"].append(parts[1])
        columns["headers"].append(parts[2])
        columns["priority"].append(_check_int32("priority", job, job.priority))
        columns["max_attempts"].append(_check_int32("max_attempts", job, job.max_attempts, 1))
        columns["unique_key"].append(job.unique_key)
        columns["run_at"].append(_check_aware("run_at", job, job.run_at))
        columns["schedule"].append(job.schedule)
        columns["scheduled_time"].append(_check_aware("scheduled_time", job, job.scheduled_time))
    return columns


def record_from_row(row: Sequence[Any]) -> JobRecord:
    """Build a :class:`JobRecord` from a row of ``Statements`` record columns."""
    (
        job_id, name, queue, args, kwargs, headers, attempt, max_attempts,
        enqueued_at, available_at, priority, schedule, scheduled_time, lease_token,
    ) = row  # fmt: skip
    return JobRecord(
        job_id=str(job_id),
        name=name,
        queue=queue,
        args=args,
        kwargs=kwargs,
        attempt=attempt,
        max_attempts=max_attempts,
        enqueued_at=utc(enqueued_at),
        available_at=utc(available_at),
        priority=priority,
        headers=headers,
        schedule=schedule,
        scheduled_time=utc(scheduled_time) if scheduled_time is not None else None,
        lease_token=str(lease_token),
    )


def dead_job_from_row(row: Sequence[Any]) -> DeadJob:
    """Build a :class:`DeadJob` from a row of the dead-jobs query."""
    job_id, name, queue, attempt, error, finished_at, args, kwargs = row
    return DeadJob(
        job_id=str(job_id),
        name=name,
        queue=queue,
        attempt=attempt,
        error=error,
        failed_at=utc(finished_at),
        args=args,
        kwargs=kwargs,
    )


def parse_held(jobs: Sequence[JobRecord]) -> tuple[list[int], list[uuid.UUID], list[str]]:
    """Split claimed jobs into ids and lease tokens, plus the ids that cannot be ours.

    A job id that is not an integer, or a token that is not a UUID, was not issued by
    this provider, so its lease counts as lost.
    """
    ids: list[int] = []
    tokens: list[uuid.UUID] = []
    foreign: list[str] = []
    for job in jobs:
        try:
            job_id, token = int(job.job_id), uuid.UUID(job.lease_token)
        except ValueError:
            foreign.append(job.job_id)
            continue
        ids.append(job_id)
        tokens.append(token)
    return ids, tokens, foreign


Flush = Callable[[list[int], list[uuid.UUID]], Awaitable[set[int]]]
"""Writes successes for ``(ids, tokens)``; returns the ids whose lease still matched."""


@dataclass(slots=True)
class _Pending:
    job_id: int
    token: uuid.UUID
    future: asyncio.Future[bool] = field(repr=False)


class SuccessBatcher:
    """Coalesces concurrent successes into one UPDATE per round trip.

    The first success after an idle moment is written at once, with no added delay.
    Successes reported while that write is in flight queue up and go out together in
    the next write, up to :data:`MAX_SUCCESS_BATCH` a statement. Each caller waits for
    the write that contains its job, so :meth:`submit` returns only once its row is
    committed. Cancelling a caller does not cancel the write.
    """

    def __init__(self, flush: Flush) -> None:
        self._flush = flush
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, job_id: int, token: uuid.UUID) -> bool:
        """Write one success; return ``False`` if the lease no longer matched.

        Raises:
            ProviderError: the write failed; the job stays running until its lease
                expires and is then rescued.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # Read the outcome even if the caller was cancelled, so that asyncio does not
        # report an exception that was never retrieved.
        future.add_done_callback(_retrieve)
        self._pending.append(_Pending(job_id, token, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="obsjobs-postgres-successes")
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait until every submitted success has been written or has failed."""
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_SUCCESS_BATCH]
            del self._pending[:MAX_SUCCESS_BATCH]
            try:
                applied = await self._flush(
                    [entry.job_id for entry in batch], [entry.token for entry in batch]
                )
            except Exception as error:
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(error)
                continue
            except BaseException:
                # Cancelled (the loop is closing): no write will follow for these, so
                # release every caller instead of leaving it waiting forever.
                for entry in (*batch, *self._pending):
                    entry.future.cancel()
                self._pending.clear()
                raise
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_result(entry.job_id in applied)


def _retrieve(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()


def result_statement(
    statements: Statements, job_id: int, token: uuid.UUID, result: JobResult
) -> tuple[sql.Composed, dict[str, Any]]:
    """Return the statement and parameters recording a result other than ``SUCCEEDED``."""
    params: dict[str, Any] = {"id": job_id, "token": token, "channel": statements.channel}
    if result.outcome is Outcome.RETRY:
        params.update(retry_at=result.retry_at, error=result.error, error_type=result.error_type)
        return statements.retry, params
    if result.outcome is Outcome.DEAD:
        params.update(error=result.error, error_type=result.error_type)
        return statements.bury, params
    return statements.give_back, params


def lease_lost(job: JobRecord, result: JobResult) -> LeaseLostError:
    """Return the error for a result whose lease token no longer matches the stored one."""
    return LeaseLostError(
        f"job {job.job_id} ({job.name!r}, queue {job.queue!r}, attempt {job.attempt}) is no "
        "longer held by this claim: its lease expired and it was rescued or claimed again, "
        f"so the {result.outcome.value} result was not recorded",
        provider=PROVIDER_NAME,
    )
