"""The context of the running job, readable from inside it."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from obsjobs.protocols import JobRecord

__all__ = ["JobContext", "current_job"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """The facts a running job can read about itself.

    ``enqueued_at`` is when the job was stored, ``due_at`` when it could first run (its
    ``run_at``, or ``enqueued_at``). For jobs enqueued by a schedule, ``schedule`` is the
    schedule's name and ``scheduled_time`` the tick's nominal instant, which may be
    earlier than ``due_at`` when the scheduler was late.
    """

    job_id: str
    name: str
    queue: str
    attempt: int
    max_attempts: int
    enqueued_at: datetime
    due_at: datetime
    schedule: str | None = None
    scheduled_time: datetime | None = None


# The worker stores the claimed record; the public JobContext is built only when a job
# asks for it, which keeps the per-job cost off jobs that never do.
_current: ContextVar[JobRecord | None] = ContextVar("obsjobs_current_job", default=None)


def current_job() -> JobContext:
    """Return the context of the job that is running in this task.

    Raises:
        LookupError: when called outside a job.

    Example::

        @engine.job()
        async def report(state: State) -> None:
            ctx = current_job()
            log.info("report.progress", attempt=ctx.attempt, due_at=ctx.due_at)
    """
    job = _current.get()
    if job is None:
        raise LookupError("current_job() was called outside a running job")
    return JobContext(
        job_id=job.job_id,
        name=job.name,
        queue=job.queue,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        enqueued_at=job.enqueued_at,
        due_at=job.available_at,
        schedule=job.schedule,
        scheduled_time=job.scheduled_time,
    )
