"""OpenTelemetry SDK set-up from the standard ``OTEL_*`` environment variables.

The library depends on the OpenTelemetry API only. This helper is for applications and
the worker command that export spans over OTLP/HTTP without writing SDK code.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping

import structlog
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.re import parse_env_headers

__all__ = ["DEFAULT_SERVICE_NAME", "configure_tracing_from_env"]

DEFAULT_SERVICE_NAME = "obsjobs"
"""``service.name`` when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES sets one."""

_TRACES_PATH = "v1/traces"
_log = structlog.get_logger("obsjobs.telemetry")


def configure_tracing_from_env(
    environ: Mapping[str, str] | None = None, *, set_global: bool = True
) -> TracerProvider | None:
    """Build an SDK tracer provider that exports over OTLP/HTTP, if an endpoint is set.

    Nothing is configured, and ``None`` is returned, unless ``OTEL_EXPORTER_OTLP_ENDPOINT``
    or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, or when ``OTEL_SDK_DISABLED`` is
    ``true``. The traces endpoint is used as given; the general endpoint gets
    ``/v1/traces`` appended, as the OTLP specification says.

    The resource comes from ``Resource.create()``: ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` are honoured, and ``service.name`` defaults to
    :data:`DEFAULT_SERVICE_NAME`. Export headers come from
    ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``, else ``OTEL_EXPORTER_OTLP_HEADERS``.
    Spans are exported in batches, so call ``shutdown()`` on the returned provider
    before the process exits to send the last ones.

    Args:
        environ: the variables to read; ``os.environ`` by default. The SDK reads every
            other setting (sampler, batch sizes, export timeout, compression, TLS
            certificates) from the process environment, and ``Resource.create()`` also
            merges the process's own resource variables, under the attributes read from
            ``environ``.
        set_global: also install the provider with ``trace.set_tracer_provider``, which
            OpenTelemetry allows only once per process.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint = _traces_endpoint(env)
    if endpoint is None:
        return None

    resource = Resource.create(_resource_attributes(env))
    exporter = OTLPSpanExporter(endpoint=endpoint, headers=_headers(env))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)

    _log.info(
        "tracing.configured",
        endpoint=_without_credentials(endpoint),
        service_name=resource.attributes.get("service.name"),
    )
    return provider


def _traces_endpoint(env: Mapping[str, str]) -> str | None:
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces_endpoint:
        return traces_endpoint
    base_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base_endpoint:
        return f"{base_endpoint.rstrip('/')}/{_TRACES_PATH}"
    return None


def _signal_variable(env: Mapping[str, str], suffix: str) -> str | None:
    """Return ``OTEL_EXPORTER_OTLP_TRACES_<suffix>``, else the general variable, else None."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    # Same format as the SDK's own detector: comma-separated key=value pairs with
    # percent-encoded values. Pairs without "=" are skipped, as the SDK skips them.
    attributes: dict[str, str] = {}
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, separator, value = pair.partition("=")
        if separator and key.strip():
            attributes[key.strip()] = urllib.parse.unquote(value.strip())

    service_name = env.get("OTEL_SERVICE_NAME", "").strip()
    if service_name:
        attributes["service.name"] = service_name
    else:
        attributes.setdefault("service.name", DEFAULT_SERVICE_NAME)
    return attributes


def _headers(env: Mapping[str, str]) -> dict[str, str] | None:
    raw = _signal_variable(env, "HEADERS")
    return None if raw is None else dict(parse_env_headers(raw, liberal=True))


def _without_credentials(url: str) -> str:
    """Return ``url`` without a user name or password, which must not reach the logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
