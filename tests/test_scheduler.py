"""Tests for the scheduler: ticks through the queue, misfire and overrun policies."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from obsjobs import (
    ConfigurationError,
    Engine,
    IntervalTrigger,
    InvalidScheduleError,
    JobContext,
    ManualClock,
    MemoryQueue,
    Middleware,
    Misfire,
    Overrun,
    compose,
    current_job,
)
from obsjobs.scheduler import Schedule, plan_ticks

START = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
WAIT_S = 5.0


@dataclass
class State:
    contexts: list[JobContext] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class Recorder(Middleware):
    """Collects scheduler events the way the metrics middleware receives them."""

    def __init__(self) -> None:
        self.planned: dict[str, datetime] = {}
        self.missed: dict[str, int] = {}

    def worker_started(self, queues: Sequence[str], concurrency: int) -> None:
        pass

    def worker_stopped(self, queues: Sequence[str]) -> None:
        pass

    def schedule_planned(self, schedule: str, next_run: datetime) -> None:
        self.planned[schedule] = next_run

    def schedule_missed(self, schedule: str, count: int) -> None:
        self.missed[schedule] = self.missed.get(schedule, 0) + count


async def settle(condition: object, check: object = None) -> None:
    """Yield to the loop until ``condition()`` is true, bounded by WAIT_S."""
    for _ in range(int(WAIT_S / 0.002)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never became true")


def make_engine(queue: MemoryQueue | None = None) -> tuple[Engine[State], ManualClock, Recorder]:
    recorder = Recorder()
    clock = ManualClock(START)
    engine = Engine(State(), compose(queue or MemoryQueue(), recorder), clock=clock)
    return engine, clock, recorder


async def test_cron_ticks_run_through_queue() -> None:
    """Each cron tick becomes a job that knows its schedule and nominal time."""
    engine, clock, recorder = make_engine()

    @engine.job(name="tick")
    async def tick(state: State) -> None:
        state.contexts.append(current_job())

    engine.cron("*/5 * * * *", tick, name="five-minutes")
    async with engine:
        await clock.advance(timedelta(minutes=11))
        await settle(lambda: len(engine.state.contexts) == 2)
    times = [ctx.scheduled_time for ctx in engine.state.contexts]
    assert times == [START + timedelta(minutes=5), START + timedelta(minutes=10)]
    assert {ctx.schedule for ctx in engine.state.contexts} == {"five-minutes"}
    assert recorder.planned["five-minutes"] == START + timedelta(minutes=15)
    assert recorder.missed == {}


async def test_seconds_cron_fires_each_second() -> None:
    """A six-field expression reads seconds first."""
    engine, clock, _ = make_engine()

    @engine.job(name="fast")
    async def fast(state: State) -> None:
        state.contexts.append(current_job())

    engine.cron("*/2 * * * * *", fast, name="two-seconds")
    async with engine:
        for _ in range(6):
            await clock.advance(timedelta(seconds=1))
            await settle(lambda: not engine.state.contexts or True)
        await settle(lambda: len(engine.state.contexts) == 3)
    offsets = [
        (ctx.scheduled_time - START).total_seconds()
        for ctx in engine.state.contexts
        if ctx.scheduled_time
    ]
    assert offsets == [2.0, 4.0, 6.0]


async def test_interval_grid_ignores_run_time() -> None:
    """A slow run does not shift later interval ticks off the grid."""
    engine, clock, _ = make_engine()

    @engine.job(name="slow")
    async def slow(state: State) -> None:
        state.contexts.append(current_job())

    engine.every(timedelta(seconds=30), slow, name="half-minute", overrun=Overrun.ALLOW)
    async with engine:
        for _ in range(4):
            await clock.advance(timedelta(seconds=30))
            await settle(lambda: len(engine.state.contexts) >= 1)
        await settle(lambda: len(engine.state.contexts) == 4)
    times = [ctx.scheduled_time for ctx in engine.state.contexts]
    assert times == [START + timedelta(seconds=30 * k) for k in range(1, 5)]


async def test_overrun_skips_tick_while_running() -> None:
    """A tick due while the previous run is going is skipped and counted as missed."""
    engine, clock, recorder = make_engine()
    started = asyncio.Event()

    @engine.job(name="long")
    async def long_job(state: State) -> None:
        state.contexts.append(current_job())
        started.set()
        await state.release.wait()

    engine.every(timedelta(minutes=1), long_job, name="minutely")
    async with engine:
        await clock.advance(timedelta(minutes=1))
        await asyncio.wait_for(started.wait(), WAIT_S)
        await clock.advance(timedelta(minutes=1))
        await settle(lambda: recorder.missed.get("minutely") == 1)
        engine.state.release.set()
        await clock.advance(timedelta(minutes=1))
        await settle(lambda: len(engine.state.contexts) == 2)
    assert [ctx.scheduled_time for ctx in engine.state.contexts] == [
        START + timedelta(minutes=1),
        START + timedelta(minutes=3),
    ]


async def test_restart_coalesces_missed_ticks() -> None:
    """Ticks missed while no scheduler ran become one run; the others are counted.

    The first engine ran the 13:00 tick. The second starts at 16:30 with 14:00, 15:00
    and 16:00 due: it runs 16:00 and counts two missed.
    """
    queue = MemoryQueue()
    engine, clock, _ = make_engine(queue)

    @engine.job(name="hourly")
    async def hourly(state: State) -> None:
        state.contexts.append(current_job())

    engine.cron("0 * * * *", hourly, name="top-of-hour")
    async with engine:
        await clock.advance(timedelta(hours=1))
        await settle(lambda: len(engine.state.contexts) == 1)

    second, clock2, recorder2 = make_engine(queue)
    second.registry.add(hourly)
    second.cron("0 * * * *", hourly, name="top-of-hour")
    await clock2.advance(timedelta(hours=4, minutes=30))
    async with second:
        await settle(lambda: recorder2.missed.get("top-of-hour") == 2)
        await settle(lambda: len(engine.state.contexts) == 1 and bool(second.state.contexts))
    assert [ctx.scheduled_time for ctx in second.state.contexts] == [START + timedelta(hours=4)]


def plain_schedule(misfire: Misfire, *, max_catchup: int = 100) -> Schedule:
    return Schedule(
        name="s",
        trigger=IntervalTrigger(timedelta(minutes=1), anchor=START),
        job_name="job",
        queue="default",
        max_attempts=1,
        misfire=misfire,
        misfire_grace_s=30.0,
        max_catchup=max_catchup,
        overrun=Overrun.ALLOW,
        next_run=START + timedelta(minutes=1),
    )


@pytest.mark.parametrize(
    ("misfire", "late_s", "run_minutes", "missed"),
    [
        (Misfire.SKIP, 10, [5], 4),
        (Misfire.SKIP, 45, [], 5),
        (Misfire.COALESCE, 10, [5], 4),
        (Misfire.COALESCE, 45, [5], 4),
        (Misfire.ALL, 10, [1, 2, 3, 4, 5], 0),
    ],
)
def test_misfire_policy_plans_ticks(
    misfire: Misfire, late_s: int, run_minutes: list[int], missed: int
) -> None:
    """Each misfire policy picks the expected ticks from five due ones."""
    now = START + timedelta(minutes=5, seconds=late_s)
    plan = plan_ticks(plain_schedule(misfire), now)
    assert plan.run == [START + timedelta(minutes=m) for m in run_minutes]
    assert plan.missed == missed
    assert plan.next_run == START + timedelta(minutes=6)


def test_misfire_all_is_bounded() -> None:
    """Misfire.ALL runs at most max_catchup ticks, the latest ones."""
    now = START + timedelta(minutes=10)
    plan = plan_ticks(plain_schedule(Misfire.ALL, max_catchup=3), now)
    assert plan.run == [START + timedelta(minutes=m) for m in (8, 9, 10)]
    assert plan.missed == 7


def test_on_time_tick_is_not_missed() -> None:
    """A single tick a few milliseconds late is on time under every policy."""
    for misfire in Misfire:
        now = START + timedelta(minutes=1, milliseconds=3)
        plan = plan_ticks(plain_schedule(misfire), now)
        assert plan.run == [START + timedelta(minutes=1)]
        assert plan.missed == 0


async def test_invalid_cron_rejected_at_registration() -> None:
    """An impossible expression fails when the schedule is added, naming it."""
    engine: Engine[State] = Engine(State())

    async def noop(state: State) -> None:
        pass

    with pytest.raises(InvalidScheduleError) as raised:
        engine.cron("0 0 30 2 *", noop, name="never")
    assert raised.value.schedule == "never"
    assert "0 0 30 2 *" in str(raised.value)


async def test_misfire_all_needs_overrun_allow() -> None:
    """Misfire.ALL with the default overrun policy is a configuration error."""
    engine: Engine[State] = Engine(State())

    async def noop(state: State) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"needs overrun=Overrun.ALLOW$"):
        engine.every(60, noop, name="catch-up", misfire=Misfire.ALL)


async def test_tick_starts_new_trace(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """Each tick's producer span is the root of its own trace."""
    clock = ManualClock(START)
    engine = Engine(State(), MemoryQueue(), clock=clock, tracer_provider=tracer_provider)

    @engine.job(name="beat")
    async def beat(state: State) -> None:
        state.contexts.append(current_job())

    engine.every(60, beat, name="beat")
    tracer = tracer_provider.get_tracer("test")
    async with engine:
        with tracer.start_as_current_span("unrelated"):
            await clock.advance(timedelta(minutes=2))
        await settle(lambda: len(engine.state.contexts) == 2)
    sends = [s for s in span_exporter.get_finished_spans() if s.name == "send default"]
    assert len(sends) == 2
    assert all(span.parent is None for span in sends)
    assert sends[0].context.trace_id != sends[1].context.trace_id
    assert sends[0].attributes is not None
    assert sends[0].attributes["messaging.obsjobs.schedule"] == "beat"
