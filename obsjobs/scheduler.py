"""The scheduler: enqueues cron and interval ticks through the normal queue.

It never calls a job itself. Each tick becomes a job with the schedule's name and the
tick's nominal time, sent through the provider like any other, so ticks are traced,
counted and retried the same way, and a durable provider can keep one job per tick
however many schedulers run.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from obsjobs.arguments import check_arguments
from obsjobs.clock import Clock
from obsjobs.errors import ConfigurationError, ProviderError
from obsjobs.jobs import DEFAULT_QUEUE, RegisteredJob, default_job_name, validate_name
from obsjobs.protocols import EngineObserver, EnqueueResult, Job, JSONValue, NewJob, QueueProvider
from obsjobs.triggers import Trigger

__all__ = [
    "DEFAULT_MISFIRE_GRACE_S",
    "Misfire",
    "Overrun",
    "Schedule",
    "Scheduler",
    "build_schedule",
]

_log = structlog.get_logger("obsjobs.scheduler")

DEFAULT_MISFIRE_GRACE_S: Final = 30.0
"""How late a tick may be enqueued and still count as on time. Event-loop jitter is
milliseconds; this covers a busy loop or a slow provider without calling a tick missed."""
DEFAULT_MAX_CATCHUP: Final = 100
"""With ``Misfire.ALL``, the most missed ticks enqueued at once; older ones are dropped."""
MAX_TICKS_SCANNED: Final = 100_000
"""Ticks walked one by one when catching up; beyond it the rest are counted in one step."""
ERROR_RETRY_S: Final = 5.0
"""Pause before retrying a tick whose enqueue failed."""


class Misfire(enum.Enum):
    """The policy for ticks missed while no scheduler ran, or enqueued later than the grace.

    A tick is missed when a later tick is also due, or when it is later than the
    schedule's ``misfire_grace_s``. Missed ticks are counted in
    ``obsjobs_schedule_missed_ticks_total`` and logged as ``schedule.missed``.
    """

    SKIP = "skip"
    """Run none of the missed ticks; only an on-time tick runs."""
    COALESCE = "coalesce"
    """Run once, for the latest due tick, however many were missed (the default)."""
    ALL = "all"
    """Run every missed tick, oldest first, at most ``max_catchup`` of them."""


class Overrun(enum.Enum):
    """The policy for a tick that falls due while the previous tick's job is not done."""

    SKIP = "skip"
    """Skip the tick and count it as missed (the default): no concurrent runs."""
    ALLOW = "allow"
    """Enqueue it anyway; runs of this schedule may overlap."""


@dataclass(slots=True)
class Schedule:
    """A named trigger and the job it enqueues on each tick."""

    name: str
    trigger: Trigger
    job_name: str
    queue: str
    max_attempts: int
    args: list[JSONValue] = field(default_factory=list)
    kwargs: dict[str, JSONValue] = field(default_factory=dict)
    function: Job | None = None
    misfire: Misfire = Misfire.COALESCE
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S
    max_catchup: int = DEFAULT_MAX_CATCHUP
    overrun: Overrun = Overrun.SKIP
    next_run: datetime | None = None

    def tick_job(self, nominal: datetime) -> NewJob:
        """Build the job for the tick at ``nominal``."""
        unique_key = f"obsjobs.schedule:{self.name}" if self.overrun is Overrun.SKIP else None
        return NewJob(
            name=self.job_name,
            queue=self.queue,
            args=list(self.args),
            kwargs=dict(self.kwargs),
            max_attempts=self.max_attempts,
            unique_key=unique_key,
            schedule=self.name,
            scheduled_time=nominal,
            function=self.function,
        )


def build_schedule(
    name: str,
    trigger: Trigger,
    job: RegisteredJob[Any, ...] | Job,
    *,
    kwargs: Mapping[str, object] | None,
    queue: str | None,
    misfire: Misfire,
    misfire_grace_s: float,
    overrun: Overrun,
) -> Schedule:
    """Check a schedule's settings and build it; closures run on the default queue.

    Raises:
        ConfigurationError: an invalid name or queue, or ``Misfire.ALL`` without
            ``Overrun.ALLOW``.
        JobArgumentsError: ``kwargs`` would not survive JSON unchanged.
        ValueError: a negative ``misfire_grace_s``.
    """
    validate_name("schedule", name)
    if misfire is Misfire.ALL and overrun is Overrun.SKIP:
        raise ConfigurationError(
            f"schedule {name!r}: misfire=Misfire.ALL runs missed ticks side by side, "
            "so it needs overrun=Overrun.ALLOW"
        )
    if not misfire_grace_s >= 0:
        raise ValueError(f"misfire_grace_s must be zero or more seconds, got {misfire_grace_s!r}")
    if isinstance(job, RegisteredJob):
        job_name, function = job.name, None
        max_attempts, default_queue = job.max_attempts, job.queue
    else:
        job_name, function = default_job_name(job), job
        max_attempts, default_queue = 1, DEFAULT_QUEUE
    _, checked_kwargs = check_arguments(job_name, (), kwargs or {})
    return Schedule(
        name=name,
        trigger=trigger,
        job_name=job_name,
        queue=validate_name("queue", queue or default_queue),
        max_attempts=max_attempts,
        kwargs=checked_kwargs,
        function=function,
        misfire=misfire,
        misfire_grace_s=misfire_grace_s,
        overrun=overrun,
    )


Sender = Callable[[Sequence[NewJob]], Awaitable[list[EnqueueResult]]]


@dataclass(frozen=True, slots=True)
class _Plan:
    run: list[datetime]
    missed: int
    next_run: datetime


class Scheduler:
    """Sleeps until the next tick of any schedule, then enqueues what is due."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        provider: QueueProvider,
        send_tick: Sender,
        clock: Clock,
        observers: Sequence[EngineObserver],
    ) -> None:
        self._schedules = list(schedules)
        self._provider = provider
        self._send_tick = send_tick
        self._clock = clock
        self._observers = list(observers)

    async def run(self) -> None:
        """Run until cancelled."""
        if not self._schedules:
            return
        await self._load_last_ticks()
        while True:
            due_at = min(s.next_run for s in self._schedules if s.next_run is not None)
            await self._clock.sleep_until(due_at)
            now = self._clock.now()
            for schedule in self._schedules:
                if schedule.next_run is not None and schedule.next_run <= now:
                    await self._fire(schedule, now)

    async def _load_last_ticks(self) -> None:
        # The last tick stored by the provider lets the misfire policy see ticks missed
        # while no scheduler ran. A schedule with no stored tick starts from now.
        now = self._clock.now()
        for schedule in self._schedules:
            last: datetime | None = None
            try:
                last = await self._provider.last_tick(schedule.name)
            except ProviderError as error:
                _log.error("schedule.load_failed", schedule=schedule.name, error=repr(error))
            schedule.next_run = schedule.trigger.next_after(last or now)
            self._planned(schedule)

    async def _fire(self, schedule: Schedule, now: datetime) -> None:
        plan = plan_ticks(schedule, now)
        if plan.missed:
            _log.warning(
                "schedule.missed",
                schedule=schedule.name,
                missed=plan.missed,
                policy=schedule.misfire.value,
            )
            self._missed(schedule, plan.missed)
        for nominal in plan.run:
            if not await self._enqueue_tick(schedule, nominal):
                # Keep the tick due, so it is tried again after a pause.
                schedule.next_run = now + timedelta(seconds=ERROR_RETRY_S)
                return
        schedule.next_run = plan.next_run
        self._planned(schedule)

    async def _enqueue_tick(self, schedule: Schedule, nominal: datetime) -> bool:
        try:
            results = await self._send_tick([schedule.tick_job(nominal)])
        except ProviderError as error:
            _log.error(
                "schedule.enqueue_failed",
                schedule=schedule.name,
                scheduled_time=nominal.isoformat(),
                error=repr(error),
            )
            return False
        result = results[0]
        if result.created:
            _log.info(
                "schedule.enqueued",
                schedule=schedule.name,
                job_id=result.job_id,
                job=schedule.job_name,
                queue=schedule.queue,
                scheduled_time=nominal.isoformat(),
            )
        elif result.job_id:
            _log.warning(
                "schedule.overrun",
                schedule=schedule.name,
                job_id=result.job_id,
                scheduled_time=nominal.isoformat(),
            )
            self._missed(schedule, 1)
        else:
            _log.debug(
                "schedule.tick_taken", schedule=schedule.name, scheduled_time=nominal.isoformat()
            )
        return True

    def _planned(self, schedule: Schedule) -> None:
        if schedule.next_run is None:
            return
        for observer in self._observers:
            observer.schedule_planned(schedule.name, schedule.next_run)

    def _missed(self, schedule: Schedule, count: int) -> None:
        for observer in self._observers:
            observer.schedule_missed(schedule.name, count)


def plan_ticks(schedule: Schedule, now: datetime) -> _Plan:
    """Decide which due ticks of ``schedule`` to enqueue at ``now``, and which are missed.

    Every tick from ``schedule.next_run`` up to ``now`` is due. The latest is on time if
    it is at most ``misfire_grace_s`` late; every other due tick is missed, and the
    misfire policy decides which missed ticks still run.
    """
    if schedule.next_run is None:
        raise ValueError(f"schedule {schedule.name!r} has no next run planned")
    due: list[datetime] = []
    uncounted = 0
    tick = schedule.next_run
    while tick <= now:
        if len(due) < MAX_TICKS_SCANNED:
            due.append(tick)
        else:
            uncounted += 1
            if uncounted >= MAX_TICKS_SCANNED:
                # NOTE: past this many ticks the count stops being exact; the scan jumps
                # to now, so a schedule off for years costs bounded work.
                tick = schedule.trigger.next_after(now)
                break
        tick = schedule.trigger.next_after(tick)
    next_run = tick
    if not due:
        return _Plan([], 0, next_run)

    latest = due[-1]
    on_time = (now - latest).total_seconds() <= schedule.misfire_grace_s
    missed = due if not on_time else due[:-1]
    total_missed = len(missed) + uncounted
    if schedule.misfire is Misfire.SKIP:
        run = [latest] if on_time else []
    elif schedule.misfire is Misfire.COALESCE:
        run = [latest]
        total_missed = len(due) - 1 + uncounted
    else:
        run = due[-schedule.max_catchup :] if schedule.max_catchup > 0 else []
        total_missed = len(due) - len(run) + uncounted
    return _Plan(run, total_missed, next_run)
