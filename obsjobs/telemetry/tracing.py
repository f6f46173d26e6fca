"""OpenTelemetry spans for enqueue, claim and perform, after the messaging conventions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from obsjobs.protocols import JobRecord, NewJob
from obsjobs.version import VERSION

__all__ = ["SCHEMA_URL", "SEMCONV_VERSION", "ActiveSpan", "JobTracer", "record_failure"]

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

    def send(self, jobs: Sequence[NewJob], *, new_trace: bool = False) -> ActiveSpan:
        """Start the producer span of an enqueue and inject its context into each job.

        Use the result as a context manager around the provider call. ``new_trace``
        starts a root span, for schedule ticks that no request caused.
        """
        queue = jobs[0].queue if jobs else ""
        attributes = self._common("send", "send", queue)
        if len(jobs) == 1:
            job = jobs[0]
            _add_job_attributes(attributes, job.name, job.schedule, job.scheduled_time)
        else:
            attributes["messaging.batch.message_count"] = len(jobs)
        span = self._tracer.start_span(
            f"send {queue}",
            context=otel_context.Context() if new_trace else None,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        span_context = trace.set_span_in_context(span)
        for job in jobs:
            propagate.inject(job.headers, context=span_context)
        return ActiveSpan(span, span_context, record_errors=True)

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

    def process(self, job: JobRecord) -> ActiveSpan:
        """Start the consumer span of one attempt, continuing or linking the producer.

        Use the result as a context manager around the attempt; the worker records
        failures itself, because a retry the job asked for is not an error. The
        attributes are given at creation, so that a sampler can read them.
        """
        extracted = propagate.extract(job.headers)
        producer = trace.get_current_span(extracted).get_span_context()
        links = [Link(producer)] if producer.is_valid else None
        parent = extracted
        if self._link_only or not producer.is_valid:
            parent = otel_context.Context()
        attributes = self._common("process", "process", job.queue)
        attributes["messaging.message.id"] = job.job_id
        attributes["messaging.obsjobs.attempt"] = job.attempt
        _add_job_attributes(attributes, job.name, job.schedule, job.scheduled_time)
        span = self._tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
        )
        return ActiveSpan(span, trace.set_span_in_context(span, parent), record_errors=False)

    def _common(
        self, operation_type: str, operation_name: str, queue: str
    ) -> dict[str, AttributeValue]:
        return {
            "messaging.system": SYSTEM,
            "messaging.operation.type": operation_type,
            "messaging.operation.name": operation_name,
            "messaging.destination.name": queue,
            "messaging.obsjobs.provider": self._provider_name,
        }


class ActiveSpan:
    """Makes a started span current for a ``with`` block and ends it on exit.

    A plain class rather than a generator-based context manager, because it runs twice
    per job and the generator machinery costs more than the rest of it.
    """

    __slots__ = ("_context", "_record_errors", "_token", "span")

    def __init__(self, span: Span, context: Context, *, record_errors: bool) -> None:
        self.span = span
        self._context = context
        self._record_errors = record_errors
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(self._context)
        return self.span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error is not None and self._record_errors:
                record_failure(self.span, error)
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self.span.end()


def _add_job_attributes(
    attributes: dict[str, AttributeValue],
    name: str,
    schedule: str | None,
    scheduled_time: datetime | None,
) -> None:
    attributes["messaging.obsjobs.job.name"] = name
    if schedule is not None:
        attributes["messaging.obsjobs.schedule"] = schedule
    if scheduled_time is not None:
        attributes["messaging.obsjobs.scheduled_time"] = scheduled_time.isoformat()


def record_failure(span: Span, error: BaseException) -> None:
    """Mark ``span`` as failed by ``error``: exception event, ERROR status, error.type."""
    if not span.is_recording():
        return
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.set_attribute("error.type", type(error).__qualname__)
