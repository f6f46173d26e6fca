"""Tests for the /metrics HTTP server, over loopback only."""

from __future__ import annotations

import errno
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

import obsjobs.telemetry.server as server_module
from obsjobs.errors import ConfigurationError
from obsjobs.telemetry.server import MetricsServer, start_metrics_server

# No proxy: requests must go straight to the loopback server.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("obsjobs_test_events", "Events seen by the test.", registry=registry).inc(3)
    return registry


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    metrics_server = start_metrics_server(0, registry=registry)
    yield metrics_server
    metrics_server.close()


def fetch(url: str, accept: str | None = None) -> tuple[str, str]:
    """Return the content type and body of a GET request."""
    request = urllib.request.Request(url)
    if accept is not None:
        request.add_header("Accept", accept)
    with OPENER.open(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_server_reports_real_port(server: MetricsServer) -> None:
    """With port 0 the server reports the port the OS picked, and a matching URL."""
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"


def test_server_serves_text_format(server: MetricsServer) -> None:
    """Without an Accept header the registry is served in the Prometheus text format."""
    content_type, body = fetch(server.url)

    assert content_type.startswith("text/plain")
    assert "obsjobs_test_events_total 3.0" in body


def test_server_serves_openmetrics_on_request(server: MetricsServer) -> None:
    """An Accept header asking for OpenMetrics gets OpenMetrics, which ends with # EOF."""
    content_type, body = fetch(server.url, accept="application/openmetrics-text")

    assert content_type.startswith("application/openmetrics-text")
    assert "obsjobs_test_events_total 3.0" in body
    assert body.endswith("# EOF\n")


def test_busy_port_raises_configuration_error(registry: CollectorRegistry) -> None:
    """A port another socket listens on raises ConfigurationError naming address and fix."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]

        with pytest.raises(ConfigurationError) as raised:
            start_metrics_server(port, registry=registry)

    assert raised.match(
        rf"^cannot serve /metrics on 127\.0\.0\.1:{port}: address already in use; "
        r"choose another port with --metrics-port$"
    )
    assert isinstance(raised.value.__cause__, OSError)


def test_other_bind_error_names_host(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bind failure other than a busy port reports the OS reason and points at the host."""

    def fail_to_bind(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    monkeypatch.setattr(server_module, "start_http_server", fail_to_bind)

    with pytest.raises(ConfigurationError) as raised:
        start_metrics_server(9464, host="::1", registry=registry)

    assert raised.match(
        r"^cannot serve /metrics on \[::1\]:9464: Cannot assign requested address; "
        r"check the address given with --metrics-host$"
    )


def test_close_frees_port(registry: CollectorRegistry) -> None:
    """After close the same port can be served again."""
    first = start_metrics_server(0, registry=registry)
    port = first.port
    first.close()

    second = start_metrics_server(port, registry=registry)
    second.close()

    assert second.port == port


def test_close_is_idempotent(registry: CollectorRegistry) -> None:
    """A second close does nothing, and the context manager closes on exit."""
    with start_metrics_server(0, registry=registry) as metrics_server:
        port = metrics_server.port
    metrics_server.close()

    with pytest.raises(OSError):
        OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=10)


@pytest.mark.parametrize("port", [-1, 65536])
def test_port_out_of_range(port: int) -> None:
    """A port outside 0..65535 raises ValueError naming the parameter."""
    with pytest.raises(ValueError, match=rf"^port must be between 0 and 65535, got {port}$"):
        start_metrics_server(port)


@pytest.mark.parametrize("port", ["9464", True, 9464.0])
def test_port_of_wrong_type(port: object) -> None:
    """A port that is not an integer raises TypeError naming the parameter."""
    with pytest.raises(TypeError, match=r"^port must be an integer, got "):
        start_metrics_server(port)  # type: ignore[arg-type]


def test_ipv6_loopback_url_has_brackets(registry: CollectorRegistry) -> None:
    """On ::1 the URL puts the address in brackets, and the endpoint serves metrics."""
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        metrics_server = start_metrics_server(0, host="::1", registry=registry)
    except ConfigurationError:
        pytest.skip("::1 is not configured on this host")

    with metrics_server:
        _, body = fetch(metrics_server.url)

    assert metrics_server.url == f"http://[::1]:{metrics_server.port}/metrics"
    assert "obsjobs_test_events_total 3.0" in body
