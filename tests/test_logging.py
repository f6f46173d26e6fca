"""Tests for the structlog trace-id processor and configure_logging."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from obsjobs.telemetry.logging import add_trace_ids, configure_logging


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("test")
    provider.shutdown()


def capture_output() -> io.StringIO:
    """Send configured output to a buffer instead of standard output."""
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))
    return buffer


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_trace_ids_added_inside_span(tracer: Tracer) -> None:
    """Inside a span the processor adds its trace and span ids as W3C lowercase hex."""
    with tracer.start_as_current_span("work") as span:
        event = add_trace_ids(None, "info", {"event": "job.started"})
    context = span.get_span_context()

    assert event["trace_id"] == f"{context.trace_id:032x}"
    assert event["span_id"] == f"{context.span_id:016x}"


def test_trace_ids_absent_outside_span() -> None:
    """Outside a span the event is returned without trace keys."""
    event = add_trace_ids(None, "info", {"event": "job.started"})

    assert event == {"event": "job.started"}


def test_trace_ids_keep_existing_keys(tracer: Tracer) -> None:
    """Keys the event already has are not overwritten."""
    with tracer.start_as_current_span("work") as span:
        event = add_trace_ids(None, "info", {"event": "e", "trace_id": "mine"})

    assert event["trace_id"] == "mine"
    assert event["span_id"] == f"{span.get_span_context().span_id:016x}"


def test_json_lines_carry_trace_ids(tracer: Tracer) -> None:
    """JSON output has trace ids, level, a UTC timestamp and bound context inside a span."""
    configure_logging("json")
    buffer = capture_output()
    structlog.contextvars.bind_contextvars(job_id="job-1")

    with tracer.start_as_current_span("work") as span:
        structlog.get_logger().info("job.started", queue="default")
    (line,) = json_lines(buffer)
    context = span.get_span_context()

    assert line["event"] == "job.started"
    assert line["queue"] == "default"
    assert line["job_id"] == "job-1"
    assert line["level"] == "info"
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["timestamp"].endswith("Z")


def test_json_lines_outside_span() -> None:
    """JSON output outside a span has no trace keys."""
    configure_logging("json")
    buffer = capture_output()

    structlog.get_logger().info("worker.started")
    (line,) = json_lines(buffer)

    assert "trace_id" not in line
    assert "span_id" not in line


@pytest.mark.parametrize("level", ["warning", "WARNING", logging.WARNING])
def test_level_filters_lower_events(level: str | int) -> None:
    """Events below the configured level are dropped; name case and numbers both work."""
    configure_logging("json", level=level)
    buffer = capture_output()
    log = structlog.get_logger()

    log.info("job.started")
    log.warning("worker.stopping")

    assert [line["event"] for line in json_lines(buffer)] == ["worker.stopping"]


def test_json_exception_is_structured() -> None:
    """log.exception in JSON output renders the traceback as a list of frames."""
    configure_logging("json")
    buffer = capture_output()

    try:
        raise ValueError("bad payload")
    except ValueError:
        structlog.get_logger().exception("job.failed")
    (line,) = json_lines(buffer)

    assert line["level"] == "error"
    assert line["exception"][0]["exc_type"] == "ValueError"
    assert line["exception"][0]["exc_value"] == "bad payload"


def test_console_format_renders_event(tracer: Tracer) -> None:
    """The console renderer writes the event name and the trace id on one line."""
    configure_logging("console")
    buffer = capture_output()

    with tracer.start_as_current_span("work") as span:
        structlog.get_logger().info("job.succeeded", job="send_email")
    output = buffer.getvalue()

    assert "job.succeeded" in output
    assert f"{span.get_span_context().trace_id:032x}" in output


def test_invalid_format_is_rejected() -> None:
    """An unknown format raises ValueError naming the parameter."""
    with pytest.raises(ValueError, match=r"^format must be 'json' or 'console', got 'xml'$"):
        configure_logging("xml")  # type: ignore[arg-type]


@pytest.mark.parametrize("level", ["loud", "", 15, -1])
def test_invalid_level_is_rejected(level: str | int) -> None:
    """An unknown level name or number raises ValueError naming the parameter."""
    with pytest.raises(ValueError, match=r"^level must be one of "):
        configure_logging("json", level=level)


@pytest.mark.parametrize("level", [True, 2.5, None])
def test_level_of_wrong_type(level: object) -> None:
    """A level that is neither a name nor an integer raises TypeError."""
    with pytest.raises(TypeError, match=r"^level must be a level name or number, got "):
        configure_logging("json", level=level)  # type: ignore[arg-type]


def test_json_traceback_omits_locals() -> None:
    """A JSON traceback does not carry the frame's local variables, such as job arguments."""
    configure_logging("json")
    buffer = capture_output()

    def fail(secret_token: str) -> None:
        raise RuntimeError("boom")

    try:
        fail("tok-SECRET-123")
    except RuntimeError:
        structlog.get_logger().error("job.failed", exc_info=True)
    output = buffer.getvalue()
    assert "tok-SECRET-123" not in output
    assert '"locals"' not in output
    assert "RuntimeError" in output


class BrokenPipe(io.StringIO):
    """Standard output whose reader has gone away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_stdout_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging to a closed pipe drops the line instead of raising into the caller."""
    monkeypatch.setattr("sys.stdout", BrokenPipe())
    configure_logging("json")
    logger = structlog.get_logger()
    logger.info("worker.stop_requested", reason="signal")
    logger.info("worker.stopped")
