"""The ``obsjobs`` command line: its commands, options and argument checks.

Errors in the command line raise :class:`UsageError` with a one-line message instead of
printing the usage and exiting, so that :func:`obsjobs.cli.main` prints every error the
same way and returns exit status 2.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, NoReturn

from obsjobs.errors import ObsJobsError
from obsjobs.jobs import validate_name
from obsjobs.target import Target, TargetError, parse_target
from obsjobs.version import VERSION

__all__ = ["DEMO_METRICS_PORT", "UsageError", "build_parser"]

DEMO_METRICS_PORT = 9464
"""The demo's /metrics port: the usual port of an OpenTelemetry Prometheus exporter."""


class UsageError(Exception):
    """A wrong command line; the message is the one line printed after ``obsjobs: error:``."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, raised instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``obsjobs`` argument parser; the chosen command's name is in ``command``."""
    parser = _Parser(
        prog="obsjobs",
        description="Asyncio background jobs that are traced, counted and timed.",
    )
    parser.add_argument("--version", action="version", version=f"obsjobs {VERSION}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_worker_parser(commands)
    _add_demo_parser(commands)
    _add_dead_parser(commands)
    _add_requeue_parser(commands)
    _add_migrate_parser(commands)
    return parser


_TARGET_HELP = (
    "where the engine is: a module and an attribute, such as myapp.jobs:engine. The "
    "attribute is an obsjobs.Engine, or a function without arguments (sync or async) "
    "that returns one. The current directory is on the import path."
)


def _add_worker_parser(commands: Any) -> None:
    worker: argparse.ArgumentParser = commands.add_parser(
        "worker",
        help="run an engine's worker and scheduler until SIGTERM or SIGINT",
        description=(
            "Run an engine's worker and scheduler until SIGTERM or SIGINT. The first "
            "signal stops claiming and lets running jobs finish within the shutdown "
            "grace; a second one cancels them. Spans are exported over OTLP/HTTP when "
            "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set "
            "(OTEL_SERVICE_NAME names the service)."
        ),
    )
    worker.set_defaults(command="worker")
    worker.add_argument("target", type=_target, metavar="MODULE:ATTRIBUTE", help=_TARGET_HELP)
    worker.add_argument(
        "--queues",
        type=_queue_list,
        metavar="A,B",
        help="comma-separated queues to claim jobs from, instead of the engine's",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="how many jobs run at once, instead of the engine's setting",
    )
    worker.add_argument(
        "--shutdown-grace",
        type=_seconds,
        metavar="SECONDS",
        help="how long running jobs may take to finish after the first signal, "
        "instead of the engine's setting",
    )
    worker.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="claim no jobs; only enqueue the schedules' ticks",
    )
    worker.add_argument(
        "--no-scheduler",
        dest="scheduler",
        action="store_false",
        help="run no schedules, for example because another process runs them",
    )
    _add_metrics_options(worker, default_port=None)
    _add_log_options(worker, default_level="info")


def _add_demo_parser(commands: Any) -> None:
    demo_parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run the demo service on the in-memory queue",
        description=(
            "Run the demo service on the in-memory queue: a producer enqueues fast, "
            "slow, flaky and failing jobs four times a second, a cron schedule fires "
            "every 5 seconds and an interval schedule every 10 seconds. Metrics are "
            "served on /metrics; spans are exported over OTLP/HTTP when "
            "OTEL_EXPORTER_OTLP_ENDPOINT is set. Stop it with Ctrl-C or SIGTERM."
        ),
    )
    demo_parser.set_defaults(command="demo")
    demo_parser.add_argument(
        "--duration",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop by itself after this many seconds (default: run until a signal)",
    )
    _add_metrics_options(demo_parser, default_port=DEMO_METRICS_PORT)
    _add_log_options(demo_parser, default_level="info")


def _add_dead_parser(commands: Any) -> None:
    dead: argparse.ArgumentParser = commands.add_parser(
        "dead",
        help="list dead jobs, newest first",
        description="List the dead jobs of an engine's provider, newest first.",
    )
    dead.set_defaults(command="dead")
    dead.add_argument("target", type=_target, metavar="MODULE:ATTRIBUTE", help=_TARGET_HELP)
    dead.add_argument("--queue", type=_queue_name, help="list only this queue's dead jobs")
    dead.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="list at most N jobs (default: 100)",
    )
    dead.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per job, with its arguments, instead of a table",
    )
    _add_log_options(dead, default_level="warning")


def _add_requeue_parser(commands: Any) -> None:
    requeue: argparse.ArgumentParser = commands.add_parser(
        "requeue",
        help="move dead jobs back to their queue",
        description=(
            "Move dead jobs back to their queue with a fresh attempt count. Exits with "
            "status 1 when some of the ids are not dead jobs."
        ),
    )
    requeue.set_defaults(command="requeue")
    requeue.add_argument("target", type=_target, metavar="MODULE:ATTRIBUTE", help=_TARGET_HELP)
    requeue.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="ids from 'obsjobs dead'")
    _add_log_options(requeue, default_level="warning")


def _add_migrate_parser(commands: Any) -> None:
    migrate: argparse.ArgumentParser = commands.add_parser(
        "migrate",
        help="create or upgrade the PostgreSQL tables",
        description=(
            "Create or upgrade the obsjobs tables in PostgreSQL. Needs the postgres "
            "extra: pip install 'obsjobs[postgres]'."
        ),
    )
    migrate.set_defaults(command="migrate")
    migrate.add_argument(
        "--dsn",
        required=True,
        help="libpq connection string or URL. Leave the password out of it and set "
        "PGPASSWORD or a ~/.pgpass file instead, so that it does not show in the "
        "process list.",
    )
    migrate.add_argument(
        "--schema", default="obsjobs", help="the schema to migrate (default: obsjobs)"
    )
    _add_log_options(migrate, default_level="warning")


def _add_metrics_options(parser: argparse.ArgumentParser, *, default_port: int | None) -> None:
    default = "off" if default_port is None else str(default_port)
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address to serve /metrics on (default: 127.0.0.1, this machine only; "
        "0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=default_port,
        metavar="PORT",
        help=f"serve Prometheus metrics on this port, 0 for a free port that is logged "
        f"in metrics.server_started (default: {default})",
    )


def _add_log_options(parser: argparse.ArgumentParser, *, default_level: str) -> None:
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="json lines, or readable console output; auto picks console when standard "
        "output is a terminal and json otherwise (default: auto)",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error", "critical"),
        default=default_level,
        help=f"the minimum level logged (default: {default_level})",
    )


# Argument types: each raises ArgumentTypeError, which argparse reports as a usage error.


def _target(text: str) -> Target:
    try:
        return parse_target(text)
    except TargetError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value


def _queue_name(text: str) -> str:
    try:
        return validate_name("queue", text.strip())
    except ObsJobsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _queue_list(text: str) -> tuple[str, ...]:
    names = tuple(_queue_name(name) for name in text.split(","))
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"queue names repeat in {text!r}")
    return names
