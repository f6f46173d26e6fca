"""OpenTelemetry spans for enqueue, claim and perform, after the messaging conventions."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider

from obsjobs.protocols import JobRecord, NewJob
from obsjobs.version import VERSION

__all__ = ["SCHEMA_URL", "SEMCONV_VERSION", "JobTracer"]

SEMCONV_VERSION: Final = "1.28.0"
"""The OpenTelemetry semantic conventions release whose messaging attributes we follow."""
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

SYSTEM: Final = "obsjobs"


class JobTracer:
    """Creates the engine's spans; attributes are computed only for recording spans.

    With ``link_only`` the perform span starts a new trace that links to the producer
    instead of continuing it, for jobs that run long after the request that made them.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None, *, provider_name: str, link_only: bool
    ) -> None:
        source = tracer_provider or trace.get_tracer_provider()
        # An explicit no-op provider turns tracing off: the worker then skips span
        # set-up entirely instead of creating non-recording spans per job.
        self.enabled = not isinstance(source, trace.NoOpTracerProvider)
        self._tracer = source.get_tracer("obsjobs", VERSION, schema_url=SCHEMA_URL)
        self._provider_name = provider_name
        self._link_only = link_only

    @contextmanager
    def send(self, jobs: Sequence[NewJob], *, new_trace: bool = False) -> Iterator[Span]:
        """Open the producer span around an enqueue and inject its context into each job.

        ``new_trace`` starts a root span, for schedule ticks that no request caused.
        """
        queue = jobs[0].queue if jobs else ""
        parent = otel_context.Context() if new_trace else None
        with self._tracer.start_as_current_span(
            f"send {queue}", context=parent, kind=SpanKind.PRODUCER
        ) as span:
            if span.is_recording():
                self._set_send_attributes(span, jobs, queue)
            for job in jobs:
                propagate.inject(job.headers)
            yield span

    def _set_send_attributes(self, span: Span, jobs: Sequence[NewJob], queue: str) -> None:
        span.set_attributes(self._common("send", "send", queue))
        if len(jobs) > 1:
            span.set_attribute("messaging.batch.message_count", len(jobs))
            return
        job = jobs[0]
        span.set_attribute("messaging.obsjobs.job.name", job.name)
        if job.schedule is not None:
            span.set_attribute("messaging.obsjobs.schedule", job.schedule)
        if job.scheduled_time is not None:
            span.set_attribute("messaging.obsjobs.scheduled_time", job.scheduled_time.isoformat())

    def record_claim(self, jobs: Sequence[JobRecord], start_ns: int) -> None:
        """Record one ``receive`` span per queue for a claim that returned jobs."""
        end_ns = time.time_ns()
        by_queue: dict[str, int] = {}
        for job in jobs:
            by_queue[job.queue] = by_queue.get(job.queue, 0) + 1
        for queue, count in by_queue.items():
            span = self._tracer.start_span(
                f"receive {queue}", kind=SpanKind.CLIENT, start_time=start_ns
            )
            if span.is_recording():
                span.set_attributes(self._common("receive", "receive", queue))
                span.set_attribute("messaging.batch.message_count", count)
            span.end(end_time=end_ns)

    @contextmanager
    def process(self, job: JobRecord) -> Iterator[Span]:
        """Open the consumer span for one attempt, continuing or linking the producer."""
        producer = trace.get_current_span(propagate.extract(job.headers)).get_span_context()
        links = [Link(producer)] if producer.is_valid else None
        if self._link_only or not producer.is_valid:
            parent = otel_context.Context()
        else:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(producer))
        with self._tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                self._set_process_attributes(span, job)
            yield span

    def _set_process_attributes(self, span: Span, job: JobRecord) -> None:
        span.set_attributes(self._common("process", "process", job.queue))
        span.set_attribute("messaging.message.id", job.job_id)
        span.set_attribute("messaging.obsjobs.job.name", job.name)
        span.set_attribute("messaging.obsjobs.attempt", job.attempt)
        if job.schedule is not None:
            span.set_attribute("messaging.obsjobs.schedule", job.schedule)
        if job.scheduled_time is not None:
            span.set_attribute("messaging.obsjobs.scheduled_time", job.scheduled_time.isoformat())

    def _common(self, operation_type: str, operation_name: str, queue: str) -> dict[str, str]:
        return {
            "messaging.system": SYSTEM,
            "messaging.operation.type": operation_type,
            "messaging.operation.name": operation_name,
            "messaging.destination.name": queue,
            "messaging.obsjobs.provider": self._provider_name,
        }


def record_failure(span: Span, error: BaseException) -> None:
    """Mark ``span`` as failed by ``error``: exception event, ERROR status, error.type."""
    if not span.is_recording():
        return
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.set_attribute("error.type", type(error).__qualname__)
