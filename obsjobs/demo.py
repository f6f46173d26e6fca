"""The demo service that ``obsjobs demo`` runs: four kinds of jobs, two schedules, a producer.

It is written the way an application would write it, with the public API only. This
module is the one copy of the demo: ``examples/demo_service.py`` imports it and runs it
without the command line. Everything runs on the in-memory queue, so no server is
needed, and every job is lost when the process exits.

The jobs, chosen so that every panel of the dashboard moves:

- ``demo.resize_image``: fast, a few milliseconds.
- ``demo.build_report``: slow, on the ``reports`` queue, at most two at a time.
- ``demo.call_partner_api``: flaky, fails half the time and is retried with backoff.
- ``demo.import_csv``: always fails, so every run ends dead.
- ``demo.send_digest`` every 5 seconds (a cron expression with a seconds field) and
  ``demo.clean_up_uploads`` every 10 seconds (an interval).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Final

import structlog
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from obsjobs import (
    ConcurrencyLimit,
    Engine,
    EngineStatus,
    ExponentialBackoff,
    MemoryQueue,
    Metrics,
    RetryPolicy,
    compose,
    current_job,
)

__all__ = [
    "PRODUCE_INTERVAL_S",
    "QUEUES",
    "DemoState",
    "build_engine",
    "log_summary",
    "produce",
]

QUEUES: Final = ("default", "reports")
PRODUCE_INTERVAL_S: Final = 0.25
"""Seconds between two jobs of the producer: four jobs a second."""
FLAKY_FAILURE_RATIO: Final = 0.5
"""Share of partner API calls that fail with ``ConnectionRefusedError``."""

# Relative weights of the producer's jobs: mostly fast ones, a few failing ones.
_JOB_MIX: Final = (
    ("demo.resize_image", 10),
    ("demo.call_partner_api", 5),
    ("demo.build_report", 2),
    ("demo.import_csv", 1),
)

_log = structlog.get_logger("obsjobs.demo")


@dataclass
class DemoState:
    """The application state every demo job receives.

    ``rng`` drives job durations and failures; seed it for a repeatable run.
    ``enqueued`` counts the producer's jobs.
    """

    rng: random.Random = field(default_factory=random.Random)
    enqueued: int = 0


async def resize_image(state: DemoState, image_id: int) -> None:
    """Pretend to resize an image: a fast job."""
    await asyncio.sleep(state.rng.uniform(0.005, 0.05))


async def build_report(state: DemoState, report_id: int) -> None:
    """Pretend to build a report: a slow job, which the reports queue limit keeps to two."""
    await asyncio.sleep(state.rng.uniform(0.5, 2.0))
    _log.info("report.built", report_id=report_id, job_id=current_job().job_id)


async def call_partner_api(state: DemoState, request_id: int) -> None:
    """Call an unreliable partner: fails half the time, and its retry policy tries again."""
    await asyncio.sleep(state.rng.uniform(0.01, 0.1))
    if state.rng.random() < FLAKY_FAILURE_RATIO:
        raise ConnectionRefusedError(f"connection refused by the partner API, request {request_id}")


async def import_csv(state: DemoState, row: int) -> None:
    """Import a CSV row that is always invalid, so the job fails for good."""
    raise ValueError(f"row {row}: invalid date '2024-13-45'")


async def send_digest(state: DemoState) -> None:
    """Send the digest; the cron schedule enqueues it every 5 seconds."""
    await asyncio.sleep(state.rng.uniform(0.01, 0.2))
    _log.info("digest.sent", scheduled_time=_scheduled_time())


async def clean_up_uploads(state: DemoState) -> None:
    """Delete old uploads; the interval schedule enqueues it every 10 seconds."""
    await asyncio.sleep(state.rng.uniform(0.01, 0.1))
    _log.info("uploads.cleaned", scheduled_time=_scheduled_time())


def build_engine(
    *, registry: CollectorRegistry | None = None, seed: int | None = None
) -> Engine[DemoState]:
    """Build the demo engine with its jobs and schedules; start it with ``async with``.

    Args:
        registry: where the metrics go; ``prometheus_client.REGISTRY`` by default.
        seed: seeds the random durations and failures, for a repeatable run.
    """
    provider = compose(
        MemoryQueue(),
        Metrics(registry),
        ConcurrencyLimit(global_limit=8, per_queue={"reports": 2}),
    )
    engine = Engine(
        DemoState(rng=random.Random(seed)),
        provider,
        queues=QUEUES,
        concurrency=8,
        shutdown_grace_s=5.0,
    )

    engine.job(name="demo.resize_image")(resize_image)
    engine.job(name="demo.build_report", queue="reports", timeout=30)(build_report)
    partner_retry = RetryPolicy(
        max_attempts=4,
        backoff=ExponentialBackoff(base_seconds=0.5, max_seconds=4.0),
        retry_on=(ConnectionError,),
    )
    engine.job(name="demo.call_partner_api", retry=partner_retry)(call_partner_api)
    engine.job(name="demo.import_csv")(import_csv)

    digest = engine.job(name="demo.send_digest")(send_digest)
    clean_up = engine.job(name="demo.clean_up_uploads")(clean_up_uploads)
    engine.cron("*/5 * * * * *", digest, name="digest-every-5s")
    engine.every(10, clean_up, name="clean-up-every-10s")
    return engine


async def produce(engine: Engine[DemoState], *, interval_s: float = PRODUCE_INTERVAL_S) -> None:
    """Enqueue one job of the mix every ``interval_s`` while the engine runs.

    Each enqueue happens inside a ``demo.request`` span, standing in for the web request
    that would enqueue it in a real service, so a trace shows the request, the job it
    enqueued and the job's run. Returns when the engine is no longer running, so start
    it after the engine.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive seconds, got {interval_s!r}")
    tracer = trace.get_tracer("obsjobs.demo")
    jobs = [engine.registry.get(name) for name, _ in _JOB_MIX]
    weights = [weight for _, weight in _JOB_MIX]
    state = engine.state

    while engine.status is EngineStatus.RUNNING:
        job = state.rng.choices(jobs, weights)[0]
        with tracer.start_as_current_span("demo.request", kind=trace.SpanKind.SERVER):
            await job.enqueue(state.enqueued + 1)
        state.enqueued += 1
        await asyncio.sleep(interval_s)


def log_summary(engine: Engine[DemoState]) -> None:
    """Log ``demo.summary``: jobs enqueued by the producer, attempts run, failed, retried."""
    statistics = engine.statistics()
    if statistics is None:
        _log.info("demo.summary", enqueued=engine.state.enqueued)
        return
    _log.info(
        "demo.summary",
        enqueued=engine.state.enqueued,
        runs=statistics.succeeded + statistics.failed + statistics.cancelled,
        succeeded=statistics.succeeded,
        failed=statistics.failed,
        retried=statistics.retried,
        cancelled=statistics.cancelled,
    )


def _scheduled_time() -> str | None:
    scheduled = current_job().scheduled_time
    return scheduled.isoformat() if scheduled is not None else None
