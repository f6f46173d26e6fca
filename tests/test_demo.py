"""Tests for the demo service: its jobs, schedules, failure modes and producer."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from obsjobs import CronTrigger, IntervalTrigger
from obsjobs.demo import (
    QUEUES,
    DemoState,
    build_engine,
    call_partner_api,
    import_csv,
    produce,
)


def test_demo_registers_jobs_and_schedules() -> None:
    """The demo engine has its four producer jobs, two scheduled jobs and two schedules."""
    engine = build_engine(registry=CollectorRegistry())

    assert {job.name for job in engine.registry} == {
        "demo.resize_image",
        "demo.build_report",
        "demo.call_partner_api",
        "demo.import_csv",
        "demo.send_digest",
        "demo.clean_up_uploads",
    }
    assert engine.queues == QUEUES
    assert isinstance(engine.schedules["digest-every-5s"].trigger, CronTrigger)
    assert isinstance(engine.schedules["clean-up-every-10s"].trigger, IntervalTrigger)


def test_demo_flaky_job_has_retry_policy() -> None:
    """The flaky job is retried on ConnectionError; the failing job has no policy."""
    engine = build_engine(registry=CollectorRegistry())

    flaky = engine.registry.get("demo.call_partner_api")
    failing = engine.registry.get("demo.import_csv")

    assert flaky.retry is not None
    assert flaky.retry.should_retry(ConnectionError("refused"), 1)
    assert failing.retry is None


async def test_flaky_job_fails_sometimes() -> None:
    """With a seeded generator the partner call both fails and succeeds over 20 calls."""
    state = DemoState(rng=random.Random(7))
    outcomes: list[bool] = []

    for request_id in range(20):
        try:
            await call_partner_api(state, request_id)
        except ConnectionError:
            outcomes.append(False)
        else:
            outcomes.append(True)

    assert True in outcomes
    assert False in outcomes


async def test_failing_job_always_raises() -> None:
    """The CSV import raises ValueError naming the row."""
    with pytest.raises(ValueError, match=r"^row 3: invalid date '2024-13-45'$"):
        await import_csv(DemoState(), 3)


async def test_produce_returns_when_not_running() -> None:
    """The producer enqueues nothing and returns when the engine is not running."""
    engine = build_engine(registry=CollectorRegistry())

    await produce(engine)

    assert engine.state.enqueued == 0


async def test_produce_rejects_bad_interval() -> None:
    """A non-positive interval raises ValueError naming the parameter."""
    engine = build_engine(registry=CollectorRegistry())

    with pytest.raises(ValueError, match=r"^interval_s must be positive seconds, got 0$"):
        await produce(engine, interval_s=0)
