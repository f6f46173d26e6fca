"""Tests for the Metrics middleware, over a small in-test provider."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

import obsjobs.middleware.queue_stats as queue_stats_module
from obsjobs.middleware.base import compose
from obsjobs.middleware.metrics import Metrics
from obsjobs.protocols import (
    DeadJob,
    EngineObserver,
    EnqueueResult,
    JobRecord,
    JobResult,
    NewJob,
    Outcome,
    QueueProvider,
    QueueStats,
    RescuedJob,
)
from obsjobs.version import VERSION

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class FakeQueue:
    """The smallest provider the middleware needs: it records calls and returns canned data."""

    durable = False
    lease_s = None

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.seen_keys: set[str] = set()
        self.claimable: list[JobRecord] = []
        self.rescued: list[RescuedJob] = []
        self.queue_stats: list[QueueStats] = []
        self.stats_calls = 0
        self.stats_error: Exception | None = None
        self.stats_gate: asyncio.Event | None = None
        self.finish_error: Exception | None = None
        self.finish_gate: asyncio.Event | None = None
        self.finished: list[tuple[JobRecord, JobResult]] = []
        self.finish_entered = asyncio.Event()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        results = []
        for index, job in enumerate(jobs):
            created = job.unique_key is None or job.unique_key not in self.seen_keys
            if job.unique_key is not None:
                self.seen_keys.add(job.unique_key)
            results.append(EnqueueResult(f"job-{index}", created=created))
        return results

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str) -> list[JobRecord]:
        claimed, self.claimable = self.claimable[:limit], self.claimable[limit:]
        return claimed

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        pass

    async def finish(self, job: JobRecord, result: JobResult) -> None:
        self.finished.append((job, result))
        self.finish_entered.set()
        if self.finish_gate is not None:
            await self.finish_gate.wait()
        if self.finish_error is not None:
            raise self.finish_error

    async def renew(self, jobs: Sequence[JobRecord]) -> list[str]:
        return []

    async def rescue(self) -> list[RescuedJob]:
        return self.rescued

    async def stats(self) -> list[QueueStats]:
        self.stats_calls += 1
        if self.stats_gate is not None:
            await self.stats_gate.wait()
        if self.stats_error is not None:
            raise self.stats_error
        return self.queue_stats

    async def last_tick(self, schedule: str) -> datetime | None:
        return None

    async def dead_jobs(self, queue: str | None = None, limit: int = 100) -> list[DeadJob]:
        return []

    async def requeue(self, job_ids: Sequence[str]) -> int:
        return 0


def make_record(
    name: str = "send_email",
    queue: str = "default",
    *,
    schedule: str | None = None,
    scheduled_time: datetime | None = None,
) -> JobRecord:
    return JobRecord(
        job_id="job-1",
        name=name,
        queue=queue,
        args=[],
        kwargs={},
        attempt=1,
        max_attempts=3,
        enqueued_at=T0,
        available_at=T0,
        schedule=schedule,
        scheduled_time=scheduled_time,
    )


def make_result(
    outcome: Outcome, error_type: str | None = None, *, wait_s: float = 3.0
) -> JobResult:
    return JobResult(
        outcome=outcome,
        started_at=T0 + timedelta(seconds=wait_s),
        duration_s=1.5,
        error_type=error_type,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def metrics(registry: CollectorRegistry, queue: FakeQueue) -> Metrics:
    middleware = Metrics(registry)
    compose(queue, middleware)
    return middleware


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def claim_one(metrics: Metrics, queue: FakeQueue, job: JobRecord) -> None:
    queue.claimable.append(job)
    await metrics.claim([job.queue], 1, worker_id="w1")


async def test_enqueue_counts_created_jobs(registry: CollectorRegistry, metrics: Metrics) -> None:
    """Only jobs the provider created are counted, per queue and job name."""
    jobs = [
        NewJob(name="send_email", queue="mail", unique_key="a"),
        NewJob(name="send_email", queue="mail", unique_key="a"),
        NewJob(name="resize", queue="images"),
    ]

    await metrics.enqueue(jobs)

    assert sample(registry, "obsjobs_jobs_enqueued_total", queue="mail", job="send_email") == 1
    assert sample(registry, "obsjobs_jobs_enqueued_total", queue="images", job="resize") == 1


async def test_claim_counts_jobs_in_flight(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """Each claimed job raises the in-flight gauge of its queue by one."""
    queue.claimable = [make_record(), make_record(), make_record(queue="other")]

    await metrics.claim(["default", "other"], 10, worker_id="w1")

    assert sample(registry, "obsjobs_jobs_in_flight", queue="default") == 2
    assert sample(registry, "obsjobs_jobs_in_flight", queue="other") == 1


# outcome, error_type, then the expected runs, failures, retries and dead counts.
OUTCOME_CASES = [
    (Outcome.SUCCEEDED, None, 1, None, 0, 0),
    (Outcome.RETRY, "TimeoutError", 1, 1, 1, 0),
    (Outcome.RETRY, None, 1, None, 1, 0),
    (Outcome.DEAD, "ValueError", 1, 1, 0, 1),
    (Outcome.CANCELLED, "CancelledError", 1, 1, 0, 0),
    (Outcome.RELEASED, None, None, None, None, None),
]


@pytest.mark.parametrize(
    ("outcome", "error_type", "runs", "failures", "retries", "dead"), OUTCOME_CASES
)
async def test_finish_counts_each_outcome(
    registry: CollectorRegistry,
    metrics: Metrics,
    queue: FakeQueue,
    outcome: Outcome,
    error_type: str | None,
    runs: int | None,
    failures: int | None,
    retries: int | None,
    dead: int | None,
) -> None:
    """Runs, failures, retries and dead jobs are counted by outcome; a release counts nothing."""
    job = make_record()
    await claim_one(metrics, queue, job)

    await metrics.finish(job, make_result(outcome, error_type))

    labels = {"queue": "default", "job": "send_email"}
    failure_labels = {**labels, "error_type": error_type or ""}
    assert registry.get_sample_value("obsjobs_job_runs_total", labels) == runs
    assert registry.get_sample_value("obsjobs_job_failures_total", failure_labels) == failures
    assert registry.get_sample_value("obsjobs_job_retries_total", labels) == retries
    assert registry.get_sample_value("obsjobs_jobs_dead_total", labels) == dead
    assert sample(registry, "obsjobs_jobs_in_flight", queue="default") == 0
    assert queue.finished == [(job, make_result(outcome, error_type))]


async def test_finish_observes_duration_and_wait(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """Duration comes from the result, queue wait from started_at minus available_at."""
    job = make_record()
    await claim_one(metrics, queue, job)

    await metrics.finish(job, make_result(Outcome.SUCCEEDED, wait_s=3.0))

    labels = {"queue": "default", "job": "send_email"}
    assert registry.get_sample_value("obsjobs_job_duration_seconds_sum", labels) == 1.5
    assert registry.get_sample_value("obsjobs_job_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("obsjobs_job_queue_wait_seconds_sum", labels) == 3.0
    assert registry.get_sample_value("obsjobs_job_queue_wait_seconds_count", labels) == 1


async def test_finish_clamps_negative_wait(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A start before available_at (clock skew between hosts) is observed as zero wait."""
    job = make_record()
    await claim_one(metrics, queue, job)

    await metrics.finish(job, make_result(Outcome.SUCCEEDED, wait_s=-2.0))

    labels = {"queue": "default", "job": "send_email"}
    assert registry.get_sample_value("obsjobs_job_queue_wait_seconds_sum", labels) == 0.0


async def test_default_buckets_reach_one_hour(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """Duration and wait histograms have buckets well past the client's 10 s default."""
    job = make_record()
    await claim_one(metrics, queue, job)
    await metrics.finish(job, make_result(Outcome.SUCCEEDED))

    labels = {"queue": "default", "job": "send_email", "le": "3600.0"}
    assert registry.get_sample_value("obsjobs_job_duration_seconds_bucket", labels) == 1
    assert registry.get_sample_value("obsjobs_job_queue_wait_seconds_bucket", labels) == 1


async def test_custom_buckets_are_used(registry: CollectorRegistry, queue: FakeQueue) -> None:
    """Bucket bounds given to the first Metrics on a registry are the ones served."""
    metrics = Metrics(registry, duration_buckets=[1.0, 7.0])
    compose(queue, metrics)
    job = make_record()
    await claim_one(metrics, queue, job)
    await metrics.finish(job, make_result(Outcome.SUCCEEDED))

    labels = {"queue": "default", "job": "send_email", "le": "7.0"}
    assert registry.get_sample_value("obsjobs_job_duration_seconds_bucket", labels) == 1


@pytest.mark.parametrize(
    ("parameter", "buckets"),
    [
        ("duration_buckets", []),
        ("wait_buckets", [1.0, 1.0]),
        ("lag_buckets", [5.0, 1.0]),
        ("duration_buckets", [1.0, float("nan")]),
    ],
)
def test_invalid_buckets_are_rejected(
    registry: CollectorRegistry, parameter: str, buckets: list[float]
) -> None:
    """Empty, NaN or unordered bucket bounds raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match=rf"^{parameter} must "):
        Metrics(registry, **{parameter: buckets})


def test_other_buckets_log_warning(registry: CollectorRegistry) -> None:
    """A second Metrics asking for other buckets logs that the first ones stay."""
    Metrics(registry)

    with capture_logs() as logs:
        Metrics(registry, lag_buckets=[1.0, 2.0])

    assert [entry["event"] for entry in logs] == ["metrics.buckets_ignored"]


@pytest.mark.parametrize(
    ("outcome", "error_type"),
    [
        (Outcome.SUCCEEDED, None),
        (Outcome.DEAD, "ValueError"),
        (Outcome.CANCELLED, "CancelledError"),
        (Outcome.RELEASED, None),
    ],
)
async def test_in_flight_returns_to_zero(
    registry: CollectorRegistry,
    metrics: Metrics,
    queue: FakeQueue,
    outcome: Outcome,
    error_type: str | None,
) -> None:
    """After claim then finish, the in-flight gauge is back to zero for every outcome."""
    job = make_record()
    await claim_one(metrics, queue, job)
    assert sample(registry, "obsjobs_jobs_in_flight", queue="default") == 1

    await metrics.finish(job, make_result(outcome, error_type))

    assert sample(registry, "obsjobs_jobs_in_flight", queue="default") == 0


async def test_in_flight_after_inner_raises(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """When the inner finish raises, the error propagates, in-flight drops and the run counts."""
    job = make_record()
    await claim_one(metrics, queue, job)
    queue.finish_error = RuntimeError("backend down")

    with pytest.raises(RuntimeError, match=r"^backend down$"):
        await metrics.finish(job, make_result(Outcome.SUCCEEDED))

    assert sample(registry, "obsjobs_jobs_in_flight", queue="default") == 0
    assert sample(registry, "obsjobs_job_runs_total", queue="default", job="send_email") == 1


async def test_in_flight_after_cancelled_finish(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """Cancelling finish while the inner provider waits still drops in-flight to zero."""
    job = make_record()
    await claim_one(metrics, queue, job)
    queue.finish_gate = asyncio.Event()
    task = asyncio.create_task(metrics.finish(job, make_result(Outcome.SUCCEEDED)))
    await queue.finish_entered.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert sample(registry, "obsjobs_jobs_in_flight", queue="default") == 0


async def test_schedule_lag_and_last_success(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A scheduled job's success records its lag and the last-success time."""
    job = make_record(schedule="nightly", scheduled_time=T0 - timedelta(seconds=2))
    await claim_one(metrics, queue, job)
    before = datetime.now(UTC).timestamp()

    await metrics.finish(job, make_result(Outcome.SUCCEEDED, wait_s=3.0))

    after = datetime.now(UTC).timestamp()
    last_success = sample(
        registry, "obsjobs_schedule_last_success_timestamp_seconds", schedule="nightly"
    )
    assert sample(registry, "obsjobs_schedule_lag_seconds_sum", schedule="nightly") == 5.0
    assert last_success is not None
    assert before <= last_success <= after


async def test_schedule_failure_keeps_last_success(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A failed scheduled job records lag but leaves the last-success gauge at zero."""
    job = make_record(schedule="nightly", scheduled_time=T0)
    await claim_one(metrics, queue, job)

    await metrics.finish(job, make_result(Outcome.DEAD, "ValueError", wait_s=1.0))

    assert sample(registry, "obsjobs_schedule_lag_seconds_count", schedule="nightly") == 1
    assert (
        sample(registry, "obsjobs_schedule_last_success_timestamp_seconds", schedule="nightly") == 0
    )


async def test_rescue_counts_rescued_and_dead(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """Every rescued job counts per queue; those moved to dead also count as dead."""
    queue.rescued = [
        RescuedJob("a", "send_email", "default", attempt=1, dead=False),
        RescuedJob("b", "send_email", "default", attempt=3, dead=True),
    ]

    rescued = await metrics.rescue()

    assert rescued == queue.rescued
    assert sample(registry, "obsjobs_jobs_rescued_total", queue="default") == 2
    assert sample(registry, "obsjobs_jobs_dead_total", queue="default", job="send_email") == 1


def test_metrics_is_engine_observer(metrics: Metrics) -> None:
    """Metrics satisfies the EngineObserver protocol, so the engine finds it in the chain."""
    assert isinstance(metrics, EngineObserver)


def test_observer_sets_worker_concurrency(registry: CollectorRegistry, metrics: Metrics) -> None:
    """worker_started sets concurrency per queue and worker_stopped resets it to zero."""
    metrics.worker_started(["default", "mail"], 8)
    assert sample(registry, "obsjobs_worker_concurrency", queue="mail") == 8

    metrics.worker_stopped(["default", "mail"])
    assert sample(registry, "obsjobs_worker_concurrency", queue="mail") == 0


def test_observer_records_schedule_events(registry: CollectorRegistry, metrics: Metrics) -> None:
    """schedule_planned sets the next-run time and schedule_missed adds missed ticks."""
    next_run = T0 + timedelta(hours=1)

    metrics.schedule_planned("nightly", next_run)
    metrics.schedule_missed("nightly", 3)
    metrics.schedule_missed("nightly", 0)

    assert (
        sample(registry, "obsjobs_schedule_next_run_timestamp_seconds", schedule="nightly")
        == next_run.timestamp()
    )
    assert sample(registry, "obsjobs_schedule_missed_ticks_total", schedule="nightly") == 3


def test_registry_property_returns_registry(registry: CollectorRegistry, metrics: Metrics) -> None:
    """Metrics exposes the registry it records into, so callers can serve that one."""
    assert metrics.registry is registry


def test_build_info_names_provider(registry: CollectorRegistry, metrics: Metrics) -> None:
    """obsjobs_build_info carries the package version and the wrapped provider's name."""
    labels = {"provider": "fake", "version": VERSION}

    assert registry.get_sample_value("obsjobs_build_info", labels) == 1


def parse_text(text: str) -> list[Metric]:
    """Parse the Prometheus text format."""
    return list(text_string_to_metric_families(text))


def openmetrics_text(registry: CollectorRegistry) -> str:
    """Render the OpenMetrics format (the encoder has no type annotations)."""
    output: bytes = openmetrics_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
    return output.decode()


def parse_openmetrics(text: str) -> list[Metric]:
    """Parse the OpenMetrics format (the parser has no type annotations)."""
    return list(openmetrics_parser.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def enqueued_labels(families: list[Metric]) -> list[dict[str, str]]:
    return [
        item.labels
        for family in families
        for item in family.samples
        if item.name == "obsjobs_jobs_enqueued_total"
    ]


def exemplar_of(registry: CollectorRegistry, metric: str, le: str) -> dict[str, str] | None:
    for family in parse_openmetrics(openmetrics_text(registry)):
        for item in family.samples:
            if item.name == f"{metric}_bucket" and item.labels.get("le") == le:
                return None if item.exemplar is None else dict(item.exemplar.labels)
    raise AssertionError(f"no {metric} bucket le={le} in the exposition")


async def test_exemplars_carry_trace_id(
    registry: CollectorRegistry,
    metrics: Metrics,
    queue: FakeQueue,
    tracer_provider: TracerProvider,
) -> None:
    """Inside a span, duration and wait observations carry its trace id as an exemplar."""
    job = make_record()
    await claim_one(metrics, queue, job)
    tracer = tracer_provider.get_tracer("test")

    with tracer.start_as_current_span("process default") as span:
        await metrics.finish(job, make_result(Outcome.SUCCEEDED, wait_s=3.0))
    trace_id = format(span.get_span_context().trace_id, "032x")

    assert exemplar_of(registry, "obsjobs_job_duration_seconds", "2.5") == {"trace_id": trace_id}
    assert exemplar_of(registry, "obsjobs_job_queue_wait_seconds", "5.0") == {"trace_id": trace_id}


async def test_no_exemplar_outside_span(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """Without a valid current span, observations have no exemplar."""
    job = make_record()
    await claim_one(metrics, queue, job)

    await metrics.finish(job, make_result(Outcome.SUCCEEDED))

    assert exemplar_of(registry, "obsjobs_job_duration_seconds", "2.5") is None


def test_two_metrics_share_registry(registry: CollectorRegistry) -> None:
    """Two Metrics on one registry raise no duplicate error and count into the same series."""
    first_queue, second_queue = FakeQueue("first"), FakeQueue("second")
    first, second = Metrics(registry), Metrics(registry)
    compose(first_queue, first)
    compose(second_queue, second)

    asyncio.run(first.enqueue([NewJob(name="resize", queue="images")]))
    asyncio.run(second.enqueue([NewJob(name="resize", queue="images")]))

    assert sample(registry, "obsjobs_jobs_enqueued_total", queue="images", job="resize") == 2
    assert sample(registry, "obsjobs_build_info", provider="second", version=VERSION) == 1


def test_registry_cache_is_weak() -> None:
    """The per-registry cache does not keep a registry alive once its user drops it."""
    registry = CollectorRegistry()
    compose(FakeQueue(), Metrics(registry))
    registry_ref = weakref.ref(registry)

    del registry
    gc.collect()

    assert registry_ref() is None


@settings(max_examples=30, deadline=None)
@given(
    queue_name=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20),
    job_name=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20),
)
def test_label_values_round_trip(queue_name: str, job_name: str) -> None:
    """Any queue or job name comes back unchanged from the text exposition."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    compose(FakeQueue(), metrics)

    asyncio.run(metrics.enqueue([NewJob(name=job_name, queue=queue_name)]))

    families = parse_text(generate_latest(registry).decode())

    assert enqueued_labels(families) == [{"queue": queue_name, "job": job_name}]


@pytest.mark.parametrize(
    ("queue_name", "job_name"),
    [
        ('say "hi"', "back\\slash"),
        ("line\nbreak", "trailing\\"),
        ("Zürich 日本 ✓", 'mixed "\\\n" ü'),
    ],
)
def test_special_names_escape_both_formats(queue_name: str, job_name: str) -> None:
    """Quotes, backslashes, newlines and non-ASCII survive text and OpenMetrics output."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    compose(FakeQueue(), metrics)
    asyncio.run(metrics.enqueue([NewJob(name=job_name, queue=queue_name)]))
    expected = {"queue": queue_name, "job": job_name}

    text = generate_latest(registry).decode()
    om_text = openmetrics_text(registry)

    assert enqueued_labels(parse_text(text)) == [expected]
    assert enqueued_labels(parse_openmetrics(om_text)) == [expected]


def scrape_value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """Read one sample in a worker thread, as prometheus_client's HTTP server does."""
    return registry.get_sample_value(name, labels)


async def test_depth_read_at_scrape(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A scrape from another thread reads depth by state and oldest-ready time from stats()."""
    oldest = T0 + timedelta(minutes=5)
    queue.queue_stats = [
        QueueStats("default", ready=4, scheduled=3, running=2, dead=1, oldest_ready_at=oldest)
    ]
    await metrics.open()

    values = {
        state: await asyncio.to_thread(
            scrape_value, registry, "obsjobs_queue_depth", queue="default", state=state
        )
        for state in ("ready", "scheduled", "running", "dead")
    }
    oldest_value = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_queue_oldest_ready_timestamp_seconds", queue="default"
    )
    provider_up = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_provider_up", provider="fake"
    )

    assert values == {"ready": 4, "scheduled": 3, "running": 2, "dead": 1}
    assert oldest_value == oldest.timestamp()
    assert provider_up == 1


async def test_depth_merges_same_queue(registry: CollectorRegistry) -> None:
    """Two providers reporting one queue: depths add up and the earliest oldest-ready wins."""
    first_queue, second_queue = FakeQueue("first"), FakeQueue("second")
    first_queue.queue_stats = [QueueStats("default", ready=2, oldest_ready_at=T0)]
    second_queue.queue_stats = [
        QueueStats("default", ready=5, oldest_ready_at=T0 + timedelta(hours=1))
    ]
    first, second = Metrics(registry), Metrics(registry)
    compose(first_queue, first)
    compose(second_queue, second)
    await first.open()
    await second.open()

    ready = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_queue_depth", queue="default", state="ready"
    )
    oldest = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_queue_oldest_ready_timestamp_seconds", queue="default"
    )

    assert ready == 7
    assert oldest == T0.timestamp()


async def test_no_oldest_without_ready(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A queue with no ready job has depth samples but no oldest-ready sample."""
    queue.queue_stats = [QueueStats("default", scheduled=1)]
    await metrics.open()

    oldest = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_queue_oldest_ready_timestamp_seconds", queue="default"
    )

    assert oldest is None


async def test_scrape_on_loop_serves_cache(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A scrape on the event loop's own thread returns the last stats instead of waiting."""
    queue.queue_stats = [QueueStats("default", ready=4)]
    await metrics.open()
    before_any_read = scrape_value(registry, "obsjobs_queue_depth", queue="default", state="ready")
    await asyncio.to_thread(scrape_value, registry, "obsjobs_queue_depth", queue="default")
    queue.queue_stats = [QueueStats("default", ready=9)]

    cached = scrape_value(registry, "obsjobs_queue_depth", queue="default", state="ready")

    assert before_any_read is None
    assert cached == 4
    assert queue.stats_calls == 1


async def test_closed_provider_is_not_read(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """Before open and after close, scrapes do not call stats() and serve no depth."""
    queue.queue_stats = [QueueStats("default", ready=4)]
    before_open = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_provider_up", provider="fake"
    )
    await metrics.open()
    await metrics.close()

    after_close = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_queue_depth", queue="default", state="ready"
    )

    assert before_open is None
    assert after_close is None
    assert queue.stats_calls == 0


async def test_dropped_metrics_is_not_scraped(registry: CollectorRegistry) -> None:
    """The collector keeps weak references, so a dropped Metrics disappears from scrapes."""
    queue = FakeQueue()
    queue.queue_stats = [QueueStats("default", ready=4)]
    metrics = Metrics(registry)
    compose(queue, metrics)
    await metrics.open()
    del metrics
    gc.collect()

    provider_up = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_provider_up", provider="fake"
    )

    assert provider_up is None


async def test_stats_failure_marks_provider_down(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A failing stats() gives provider_up 0, no depth, a logged error and a working scrape."""
    queue.stats_error = ConnectionError("refused")
    await metrics.open()

    with capture_logs() as logs:
        text = await asyncio.to_thread(generate_latest, registry)
    provider_up = await asyncio.to_thread(
        scrape_value, registry, "obsjobs_provider_up", provider="fake"
    )

    assert b"obsjobs_queue_depth{" not in text
    assert provider_up == 0
    assert logs[0]["event"] == "metrics.stats_failed"
    assert logs[0]["provider"] == "fake"
    assert logs[0]["log_level"] == "error"


async def test_stats_failure_log_rate_limited(
    registry: CollectorRegistry,
    metrics: Metrics,
    queue: FakeQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Repeated stats failures log once per minute per provider."""
    now = [1000.0]
    monkeypatch.setattr(queue_stats_module, "_monotonic", lambda: now[0])
    queue.stats_error = ConnectionError("refused")
    await metrics.open()

    with capture_logs() as logs:
        await asyncio.to_thread(generate_latest, registry)
        now[0] += 30.0
        await asyncio.to_thread(generate_latest, registry)
        logged_within_minute = len(logs)
        now[0] += 31.0
        await asyncio.to_thread(generate_latest, registry)

    assert logged_within_minute == 1
    assert len(logs) == 2


async def test_stats_raising_timeout_error_reported(
    registry: CollectorRegistry, metrics: Metrics, queue: FakeQueue
) -> None:
    """A TimeoutError raised inside stats() is logged as that error, not as a scrape timeout."""
    queue.stats_error = TimeoutError("pool exhausted")
    await metrics.open()

    with capture_logs() as logs:
        await asyncio.to_thread(generate_latest, registry)

    assert logs[0]["error"] == "TimeoutError: pool exhausted"


async def test_stats_timeout_marks_provider_down(
    registry: CollectorRegistry,
    metrics: Metrics,
    queue: FakeQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stats() that does not return in time gives provider_up 0 and a timeout error log."""
    monkeypatch.setattr(queue_stats_module, "STATS_TIMEOUT_S", 0.0)
    queue.stats_gate = asyncio.Event()
    await metrics.open()

    with capture_logs() as logs:
        provider_up = await asyncio.to_thread(
            scrape_value, registry, "obsjobs_provider_up", provider="fake"
        )

    assert provider_up == 0
    assert logs[0]["event"] == "metrics.stats_failed"
    assert logs[0]["error"] == "stats() timed out after 0s"


def test_fake_queue_is_provider() -> None:
    """The in-test provider satisfies QueueProvider, so these tests exercise the contract."""
    assert isinstance(FakeQueue(), QueueProvider)
