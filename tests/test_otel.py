"""Tests for configure_tracing_from_env, exporting to an OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from structlog.testing import capture_logs

from obsjobs.telemetry.otel import configure_tracing_from_env


@dataclass
class Received:
    """What the fake collector received: request paths and headers, span names, resources."""

    paths: list[str] = field(default_factory=list)
    span_names: list[str] = field(default_factory=list)
    resources: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def decode_body(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def make_handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = decode_body(self.rfile.read(length), self.headers.get("Content-Encoding"))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)

            received.paths.append(self.path)
            received.headers.append({key.lower(): value for key, value in self.headers.items()})
            for resource_spans in request.resource_spans:
                received.resources.append(
                    {
                        attribute.key: attribute.value.string_value
                        for attribute in resource_spans.resource.attributes
                    }
                )
                for scope_spans in resource_spans.scope_spans:
                    received.span_names.extend(span.name for span in scope_spans.spans)

            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@dataclass
class Collector:
    endpoint: str
    received: Received


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    # The exporter honours proxy variables; the receiver is local, so none may apply.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(received))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Collector(f"http://127.0.0.1:{server.server_address[1]}", received)
    server.shutdown()
    server.server_close()
    thread.join()


def test_no_endpoint_returns_none() -> None:
    """Without an OTLP endpoint variable nothing is configured."""
    assert configure_tracing_from_env({}, set_global=False) is None


def test_sdk_disabled_returns_none(collector: Collector) -> None:
    """OTEL_SDK_DISABLED=true wins over a configured endpoint."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_SDK_DISABLED": "true"}

    assert configure_tracing_from_env(environ, set_global=False) is None


def test_spans_reach_collector(collector: Collector) -> None:
    """A span made through the returned provider arrives at /v1/traces after shutdown."""
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint + "/",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=jobs",
    }
    provider = configure_tracing_from_env(environ, set_global=False)
    assert provider is not None

    provider.get_tracer("test").start_span("process default").end()
    provider.shutdown()

    assert collector.received.paths == ["/v1/traces"]
    assert collector.received.span_names == ["process default"]
    assert collector.received.resources[0]["service.name"] == "obsjobs"
    assert collector.received.headers[0]["x-team"] == "jobs"


def test_traces_endpoint_used_as_given(collector: Collector) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL, with no path appended."""
    environ = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint + "/custom/path"}
    provider = configure_tracing_from_env(environ, set_global=False)
    assert provider is not None

    provider.get_tracer("test").start_span("send default").end()
    provider.shutdown()

    assert collector.received.paths == ["/custom/path"]


def test_service_name_from_environment(collector: Collector) -> None:
    """OTEL_SERVICE_NAME overrides service.name, and resource attributes are kept."""
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": "billing-worker",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=staging%20eu",
    }
    provider = configure_tracing_from_env(environ, set_global=False)
    assert provider is not None

    provider.get_tracer("test").start_span("process default").end()
    provider.shutdown()

    resource = collector.received.resources[0]
    assert resource["service.name"] == "billing-worker"
    assert resource["deployment.environment"] == "staging eu"


def test_resource_attribute_sets_service_name() -> None:
    """service.name in OTEL_RESOURCE_ATTRIBUTES applies when OTEL_SERVICE_NAME is unset."""
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=mailer",
    }
    provider = configure_tracing_from_env(environ, set_global=False)
    assert provider is not None
    provider.shutdown()

    assert provider.resource.attributes["service.name"] == "mailer"


def test_configured_event_hides_credentials() -> None:
    """tracing.configured logs the endpoint without a user name or password."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:secret@127.0.0.1:9"}

    with capture_logs() as logs:
        provider = configure_tracing_from_env(environ, set_global=False)
    assert provider is not None
    provider.shutdown()

    assert logs[0]["event"] == "tracing.configured"
    assert logs[0]["endpoint"] == "http://127.0.0.1:9/v1/traces"


def test_set_global_false_leaves_global(collector: Collector) -> None:
    """With set_global=False the process's global tracer provider is not replaced."""
    before = trace.get_tracer_provider()
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}

    provider = configure_tracing_from_env(environ, set_global=False)
    assert provider is not None
    provider.shutdown()

    assert trace.get_tracer_provider() is before
