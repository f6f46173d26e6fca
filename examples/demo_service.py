"""Run the obsjobs demo service by hand, without the ``obsjobs`` command.

    python examples/demo_service.py --duration 30

The service itself (jobs, schedules and the producer) is the module ``obsjobs.demo``,
so read that module for the job code. It lives in the package because ``obsjobs demo``
must also work from an installed package. This file shows the lines an application adds
around an engine: logs, traces over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, a
``/metrics`` endpoint, and a graceful stop on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from obsjobs import Engine, configure_logging, configure_tracing_from_env, start_metrics_server
from obsjobs.demo import DemoState, build_engine, log_summary, produce


async def run(*, duration_s: float | None = None, metrics_port: int = 9464) -> Engine[DemoState]:
    """Run the demo until Ctrl-C, SIGTERM or ``duration_s``, and return the stopped engine."""
    engine = build_engine()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)

    try:
        with start_metrics_server(metrics_port):
            async with engine:
                producer = asyncio.create_task(produce(engine))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), duration_s)
                # Stop enqueueing before the engine stops, so no job is left behind.
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)

    log_summary(engine)
    return engine


def main() -> None:
    """Parse the command line, set up logs and traces, and run the demo."""
    parser = argparse.ArgumentParser(description="Run the obsjobs demo service.")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--metrics-port", type=int, default=9464, help="the /metrics port")
    args = parser.parse_args()

    configure_logging("console")
    tracer_provider = configure_tracing_from_env()
    try:
        asyncio.run(run(duration_s=args.duration, metrics_port=args.metrics_port))
    finally:
        if tracer_provider is not None:
            # Spans are exported in batches; this sends the last one.
            tracer_provider.shutdown()


if __name__ == "__main__":
    main()
