"""Tests for the engine's spans: names, kinds, attributes and one trace per job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from obsjobs import Engine, MemoryQueue, RetryJob, current_job
from obsjobs.telemetry.tracing import SCHEMA_URL

WAIT_S = 5.0


@dataclass
class State:
    done: asyncio.Event = field(default_factory=asyncio.Event)


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def wait_for_span(exporter: InMemorySpanExporter, name: str, count: int = 1) -> None:
    for _ in range(int(WAIT_S / 0.005)):
        if len(spans_named(exporter, name)) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no {count} span(s) named {name!r}")


async def test_job_trace_joins_request_trace(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """The perform span continues the trace of the code that enqueued the job."""
    engine = Engine(State(), MemoryQueue(), tracer_provider=tracer_provider)

    @engine.job(name="traced", queue="mail")
    async def traced(state: State) -> None:
        state.done.set()

    engine.queues = ("mail",)
    tracer = tracer_provider.get_tracer("test")
    async with engine:
        with tracer.start_as_current_span("request") as request:
            job_id = await traced.enqueue()
        await asyncio.wait_for(engine.state.done.wait(), WAIT_S)
        await wait_for_span(span_exporter, "process mail")

    request_trace = request.get_span_context().trace_id
    send = spans_named(span_exporter, "send mail")[0]
    receive = spans_named(span_exporter, "receive mail")[0]
    process = spans_named(span_exporter, "process mail")[0]
    assert send.kind is SpanKind.PRODUCER
    assert receive.kind is SpanKind.CLIENT
    assert process.kind is SpanKind.CONSUMER
    assert send.context.trace_id == request_trace
    assert process.context.trace_id == request_trace
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "obsjobs"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.destination.name"] == "mail"
    assert process.attributes["messaging.message.id"] == job_id
    assert process.attributes["messaging.obsjobs.job.name"] == "traced"
    assert process.attributes["messaging.obsjobs.attempt"] == 1
    assert process.attributes["messaging.obsjobs.provider"] == "memory"
    assert send.attributes is not None
    assert send.attributes["messaging.message.id"] == job_id
    assert process.instrumentation_scope is not None
    assert process.instrumentation_scope.schema_url == SCHEMA_URL


async def test_link_only_starts_new_trace(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """With trace_link_only the job runs in a new trace linked to the producer."""
    engine = Engine(State(), MemoryQueue(), tracer_provider=tracer_provider, trace_link_only=True)

    @engine.job(name="linked")
    async def linked(state: State) -> None:
        state.done.set()

    async with engine:
        await linked.enqueue()
        await asyncio.wait_for(engine.state.done.wait(), WAIT_S)
        await wait_for_span(span_exporter, "process default")
    send = spans_named(span_exporter, "send default")[0]
    process = spans_named(span_exporter, "process default")[0]
    assert process.parent is None
    assert process.context.trace_id != send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]


async def test_failed_attempt_marks_span_error(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A failing attempt records the exception, ERROR status and error.type."""
    engine = Engine(State(), MemoryQueue(), tracer_provider=tracer_provider)

    @engine.job(name="broken")
    async def broken(state: State) -> None:
        raise LookupError("no such row")

    async with engine:
        await broken.enqueue()
        await wait_for_span(span_exporter, "process default")
    process = spans_named(span_exporter, "process default")[0]
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes is not None
    assert process.attributes["error.type"] == "LookupError"
    assert [event.name for event in process.events] == ["exception"]


async def test_requested_retry_is_not_error(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A retry the job asked for leaves the span status unset."""
    engine = Engine(State(), MemoryQueue(), tracer_provider=tracer_provider)

    @engine.job(name="patient", max_attempts=2)
    async def patient(state: State) -> None:
        if current_job().attempt == 1:
            raise RetryJob(delay=0)
        state.done.set()

    async with engine:
        await patient.enqueue()
        await asyncio.wait_for(engine.state.done.wait(), WAIT_S)
        await wait_for_span(span_exporter, "process default", count=2)
    statuses = [span.status.status_code for span in spans_named(span_exporter, "process default")]
    assert statuses == [StatusCode.UNSET, StatusCode.UNSET]


async def test_batch_enqueue_one_span(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """enqueue_many makes one producer span with the batch size."""
    engine = Engine(State(), MemoryQueue(), tracer_provider=tracer_provider)

    @engine.job(name="item")
    async def item(state: State, number: int) -> None:
        pass

    await engine.enqueue_many([item.message(n) for n in range(4)])
    sends = spans_named(span_exporter, "send default")
    assert len(sends) == 1
    assert sends[0].attributes is not None
    assert sends[0].attributes["messaging.batch.message_count"] == 4


async def test_empty_claims_make_no_spans(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """An idle worker polling an empty queue records no receive span."""
    engine = Engine(State(), MemoryQueue(), tracer_provider=tracer_provider)
    async with engine:
        worker = engine._worker
        assert worker is not None
        await asyncio.sleep(0.02)
    assert spans_named(span_exporter, "receive default") == []


@pytest.mark.parametrize("link_only", [False, True])
async def test_job_without_trace_context_is_root(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter, link_only: bool
) -> None:
    """A job stored with no trace context gets a root span and no link."""
    queue = MemoryQueue()
    producer = Engine(State(), queue)  # global no-op tracing: headers stay empty
    consumer = Engine(State(), queue, tracer_provider=tracer_provider, trace_link_only=link_only)

    @producer.job(name="plain")
    async def plain(state: State) -> None:
        state.done.set()

    consumer.registry.add(plain)
    await plain.enqueue()
    async with consumer:
        await wait_for_span(span_exporter, "process default")
    process = spans_named(span_exporter, "process default")[0]
    assert process.parent is None
    assert list(process.links) == []
