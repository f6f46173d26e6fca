"""Run an engine as a long-lived process: telemetry set-up, signal handling and an orderly stop.

This is what ``obsjobs worker`` and ``obsjobs demo`` share. The first SIGTERM or SIGINT
stops the engine gracefully, within its shutdown grace, and a second one cancels the
jobs still running. Both are logged as ``worker.stop_requested``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Literal

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from obsjobs.engine import Engine, EngineStatus
from obsjobs.middleware.base import iter_chain
from obsjobs.middleware.metrics import Metrics
from obsjobs.telemetry.otel import configure_tracing_from_env
from obsjobs.telemetry.server import MetricsServer, start_metrics_server

__all__ = [
    "STOP_SIGNALS",
    "StopRequests",
    "choose_log_format",
    "configure_tracing",
    "open_metrics_server",
    "serve",
]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
"""Signals that stop the engine: the first gracefully, the second by force."""

_log = structlog.get_logger("obsjobs.cli")

Companion = Callable[[], Coroutine[Any, Any, object]]
"""A coroutine function run beside the engine while it runs, such as the demo's producer."""


def choose_log_format(requested: str) -> Literal["json", "console"]:
    """Return ``requested``, or for ``"auto"`` console on a terminal and JSON otherwise.

    The logs go to standard output, so that is the stream whose terminal is checked.
    """
    if requested == "json":
        return "json"
    if requested == "console":
        return "console"
    if requested != "auto":
        raise ValueError(f"log format must be 'auto', 'json' or 'console', got {requested!r}")
    return "console" if sys.stdout.isatty() else "json"


def configure_tracing() -> TracerProvider | None:
    """Configure the OpenTelemetry SDK from the ``OTEL_*`` variables, unless already set up.

    An application that installed its own global tracer provider (for example while its
    module was imported) keeps it, and ``None`` is returned. Otherwise this is
    :func:`obsjobs.configure_tracing_from_env`: ``None`` unless an OTLP endpoint variable
    is set. An engine built earlier uses OpenTelemetry's proxy provider, which passes
    its spans to the provider installed here. Call ``shutdown()`` on the result at exit.
    """
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _log.info("tracing.application_provider_kept")
        return None
    return configure_tracing_from_env()


def open_metrics_server(engine: Engine[Any], host: str, port: int) -> MetricsServer:
    """Serve the registry of the engine's metrics on ``http://host:port/metrics``.

    The registry is the one the first :class:`obsjobs.Metrics` in the provider chain
    records into, or the default Prometheus registry when the chain has none. Port 0
    lets the OS pick a free port; the chosen one is logged in ``metrics.server_started``.
    Logs ``metrics.middleware_missing`` when the chain has no ``Metrics``, since then no
    ``obsjobs_*`` job metric is recorded.

    Raises:
        ConfigurationError: the address cannot be bound, such as a port already in use.
    """
    layers = [layer for layer in iter_chain(engine.provider) if isinstance(layer, Metrics)]
    registry = layers[0].registry if layers else None
    server = start_metrics_server(port, host=host, registry=registry)
    if not layers:
        _log.warning(
            "metrics.middleware_missing",
            advice="wrap the provider with obsjobs.compose(provider, obsjobs.Metrics())",
        )
    return server


class StopRequests:
    """Turns stop requests (signals, a time limit) into engine stops.

    The first request calls ``engine.request_stop()``, which lets running jobs finish
    within the engine's shutdown grace. Every later one calls
    ``engine.request_stop(force=True)``, which cancels them. Requests that arrive
    before :meth:`arm` (while the engine starts) are logged at once and applied when
    it is armed, because stopping an engine halfway through its start is not safe.
    """

    def __init__(self, engine: Engine[Any]) -> None:
        self._engine = engine
        self._installed: list[signal.Signals] = []
        self._armed = False
        self.count = 0
        """How many stop requests arrived."""

    def request(self, reason: str, signal_name: str | None = None) -> None:
        """Ask the engine to stop; force the stop from the second request on."""
        self.count += 1
        force = self.count > 1
        # Stop first and log second, so that a failing log write cannot keep the
        # process running.
        if self._armed:
            self._engine.request_stop(force=force)
        log = _log.warning if force else _log.info
        if signal_name is None:
            log("worker.stop_requested", reason=reason, force=force)
        else:
            log("worker.stop_requested", reason=reason, signal=signal_name, force=force)

    def arm(self) -> None:
        """Pass requests on to the engine from now on, and the ones already received."""
        self._armed = True
        if self.count:
            self._engine.request_stop(force=self.count > 1)

    def install(self) -> None:
        """Handle :data:`STOP_SIGNALS` on the running loop until :meth:`remove`."""
        loop = asyncio.get_running_loop()
        for number in STOP_SIGNALS:
            try:
                loop.add_signal_handler(number, self.request, "signal", number.name)
            except NotImplementedError:
                # NOTE: event loops on Windows have no signal handlers; Ctrl-C there
                # raises KeyboardInterrupt, and the command stops without the grace.
                return
            self._installed.append(number)

    def remove(self) -> None:
        """Give the signals back to their previous handling."""
        loop = asyncio.get_running_loop()
        for number in self._installed:
            loop.remove_signal_handler(number)
        self._installed.clear()


async def serve(
    engine: Engine[Any],
    *,
    worker: bool = True,
    scheduler: bool = True,
    duration_s: float | None = None,
    companions: Sequence[Companion] = (),
) -> StopRequests:
    """Start ``engine``, run it until SIGTERM, SIGINT or ``duration_s``, and stop it.

    ``companions`` start after the engine and are cancelled once it has stopped; one
    that raises is logged as ``worker.task_failed`` and the engine keeps running.
    A signal during the engine's start is applied once the start returns.
    Returns the stop requests seen.

    Raises:
        ObsJobsError: the engine failed to start (for example ``ProviderError`` from
            ``open``); whatever did start is stopped first.
    """
    stops = StopRequests(engine)
    # Installed before the start, so that no signal after worker.started is logged
    # can kill the process the default way.
    stops.install()
    try:
        await engine.start(worker=worker, scheduler=scheduler)
    except BaseException:
        stops.remove()
        try:
            await engine.stop(grace_s=0)
        except Exception as stop_error:
            # The start error is the one to report; this one is only logged.
            _log.error("worker.stop_failed", error=repr(stop_error))
        raise
    stops.arm()

    loop = asyncio.get_running_loop()
    timer = None
    if duration_s is not None:
        timer = loop.call_later(duration_s, stops.request, "duration")
    tasks = [_start_companion(companion) for companion in companions]
    try:
        await engine.wait_stopped()
    finally:
        if timer is not None:
            timer.cancel()
        stops.remove()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if engine.status is not EngineStatus.STOPPED:
            # Reached only when this coroutine itself is cancelled mid-run.
            await engine.stop(grace_s=0)
    return stops


def _start_companion(companion: Companion) -> asyncio.Task[object]:
    task = asyncio.create_task(companion(), name=f"obsjobs-{_name_of(companion)}")
    task.add_done_callback(_log_companion_failure)
    return task


def _log_companion_failure(task: asyncio.Task[object]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        _log.error("worker.task_failed", task=task.get_name(), error=repr(error), exc_info=error)


def _name_of(companion: Companion) -> str:
    # functools.partial has no __name__ of its own, so name it after the function it wraps.
    function = getattr(companion, "func", companion)
    return str(getattr(function, "__name__", type(companion).__name__))
