"""A Prometheus ``/metrics`` endpoint served from a background thread."""

from __future__ import annotations

import errno
import threading
from types import TracebackType
from typing import final
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from obsjobs.errors import ConfigurationError

__all__ = ["MetricsServer", "start_metrics_server"]

_log = structlog.get_logger("obsjobs.telemetry")


@final
class MetricsServer:
    """A running ``/metrics`` HTTP server, stopped by :meth:`close`.

    The server returns the registry on every path, in the Prometheus text format, or in
    OpenMetrics (with exemplars) when the request's ``Accept`` header lists
    ``application/openmetrics-text``. Each request is handled in its own thread.
    It can be used as a context manager that closes it on exit.
    """

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self._closed = False
        self.host = host
        """The host the server was asked to bind, as given."""
        self.port: int = server.server_address[1]
        """The bound port: the one the OS picked when port 0 was requested."""

    @property
    def url(self) -> str:
        """The URL of the metrics endpoint, such as ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, free the port and join the server thread; later calls do nothing.

        It can take up to half a second, the poll interval of prometheus_client's server
        loop. A scrape still in progress finishes in its own daemon thread.
        """
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        _log.info("metrics.server_stopped", host=self.host, port=self.port)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def start_metrics_server(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    The default host is the loopback interface, so the endpoint is reachable only from
    this machine until you choose another address (``0.0.0.0`` for every interface).
    ``port=0`` lets the OS pick a free port; read it back from :attr:`MetricsServer.port`.

    Args:
        port: the TCP port, 0 to 65535.
        host: the address or host name to bind.
        registry: the registry to serve; ``prometheus_client.REGISTRY`` by default.

    Raises:
        ValueError: ``port`` is out of range.
        TypeError: ``port`` is not an integer.
        ConfigurationError: the address cannot be bound, for example because the port is
            already in use; the ``OSError`` is chained.
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an integer, got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")

    try:
        server, thread = start_http_server(
            port, addr=host, registry=REGISTRY if registry is None else registry
        )
    except OSError as error:
        raise ConfigurationError(_bind_error_message(host, port, error)) from error

    metrics_server = MetricsServer(server, thread, host)
    _log.info("metrics.server_started", host=host, port=metrics_server.port)
    return metrics_server


def _bind_error_message(host: str, port: int, error: OSError) -> str:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        advice = "address already in use; choose another port with --metrics-port"
    elif error.errno == errno.EACCES:
        advice = "permission denied; choose a port above 1023 with --metrics-port"
    else:
        advice = f"{error.strerror or error}; check the address given with --metrics-host"
    return f"cannot serve /metrics on {address}: {advice}"
