"""The ``obsjobs`` command: run a worker or the demo, inspect dead jobs, migrate PostgreSQL.

::

    obsjobs worker myapp.jobs:engine --metrics-port 9464
    obsjobs demo
    obsjobs dead myapp.jobs:engine --queue mail
    obsjobs requeue myapp.jobs:engine JOB_ID [JOB_ID ...]
    obsjobs migrate --dsn postgresql://app@127.0.0.1/app

Exit status: 0 on success, including a stop by SIGTERM or SIGINT; 1 when something
failed while running (the user's module raised, a port is busy, the provider failed);
2 for a wrong command line (a bad option, a target that names no engine). Every error
is one line on standard error, ``obsjobs: error: ...``, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import structlog

from obsjobs import demo
from obsjobs.cli_parser import UsageError, build_parser
from obsjobs.engine import Engine
from obsjobs.errors import ConfigurationError, ObsJobsError
from obsjobs.protocols import DeadJob, QueueProvider
from obsjobs.runner import choose_log_format, configure_tracing, open_metrics_server, serve
from obsjobs.target import (
    EXIT_FAILURE,
    EXIT_USAGE,
    Target,
    TargetError,
    resolve_engine,
)
from obsjobs.telemetry.logging import configure_logging

__all__ = ["main"]

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C before signal handling started: 128 plus SIGINT's number."""

_POSTGRES_MODULES = ("obsjobs.providers.postgres", "psycopg", "psycopg_pool")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``obsjobs`` command with ``argv`` (``sys.argv[1:]`` by default).

    Returns the exit status instead of exiting, so tests can call it in-process.
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except SystemExit as exit_request:
        # --help and --version print and exit; pass their status on.
        return exit_request.code if isinstance(exit_request.code, int) else 0

    command = _COMMANDS[args.command]
    try:
        return command(args)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except TargetError as error:
        return _fail(str(error), error.exit_code)
    except ObsJobsError as error:
        return _fail(str(error), EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _fail(message: str, exit_code: int) -> int:
    one_line = " ".join(message.split())
    print(f"obsjobs: error: {one_line}", file=sys.stderr)
    return exit_code


# Commands -----------------------------------------------------------------------------


def _run_worker(args: argparse.Namespace) -> int:
    if not args.worker and not args.scheduler:
        raise UsageError(
            "--no-worker and --no-scheduler together leave nothing to run; drop one of them"
        )
    configure_logging(choose_log_format(args.log_format), args.log_level)
    target: Target = args.target
    value = target.load()
    # Tracing is set up after the import, so that an application that sets up
    # OpenTelemetry while importing keeps its own provider. An engine built at import
    # time still exports through this one, by way of OpenTelemetry's proxy provider.
    tracer_provider = configure_tracing()
    try:
        asyncio.run(_serve_worker(args, target, value))
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0


async def _serve_worker(args: argparse.Namespace, target: Target, value: object) -> None:
    engine = await resolve_engine(target, value)
    if args.queues is not None:
        engine.queues = args.queues
    if args.concurrency is not None:
        engine.concurrency = args.concurrency
    if args.shutdown_grace is not None:
        engine.shutdown_grace_s = args.shutdown_grace
    with _metrics_server(engine, args.metrics_host, args.metrics_port):
        await serve(engine, worker=args.worker, scheduler=args.scheduler)


def _run_demo(args: argparse.Namespace) -> int:
    configure_logging(choose_log_format(args.log_format), args.log_level)
    # Before the engine is built, so that it uses the SDK provider directly.
    tracer_provider = configure_tracing()
    try:
        asyncio.run(_serve_demo(args))
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0


async def _serve_demo(args: argparse.Namespace) -> None:
    engine = demo.build_engine()
    with _metrics_server(engine, args.metrics_host, args.metrics_port):
        await serve(engine, duration_s=args.duration, companions=[partial(demo.produce, engine)])
    demo.log_summary(engine)


def _run_dead(args: argparse.Namespace) -> int:
    _configure_quiet_logging(args)
    target: Target = args.target
    value = target.load()
    jobs, durable = asyncio.run(_read_dead_jobs(target, value, args.queue, args.limit))
    if not durable:
        _note_not_durable()
    if args.json:
        for job in jobs:
            print(json.dumps(_dead_job_record(job), ensure_ascii=False))
    else:
        _print_dead_table(jobs)
    return 0


async def _read_dead_jobs(
    target: Target, value: object, queue: str | None, limit: int
) -> tuple[list[DeadJob], bool]:
    async with _open_provider(target, value) as provider:
        return await provider.dead_jobs(queue, limit), provider.durable


def _run_requeue(args: argparse.Namespace) -> int:
    _configure_quiet_logging(args)
    target: Target = args.target
    job_ids = list(dict.fromkeys(args.job_ids))
    value = target.load()
    moved, durable = asyncio.run(_requeue(target, value, job_ids))
    if not durable:
        _note_not_durable()
    print(f"requeued {moved} of {len(job_ids)} jobs")
    if moved < len(job_ids):
        return _fail(
            f"{len(job_ids) - moved} of {len(job_ids)} given job ids were not dead jobs of "
            "this provider (unknown ids, or already requeued); list them with 'obsjobs dead'",
            EXIT_FAILURE,
        )
    return 0


async def _requeue(target: Target, value: object, job_ids: list[str]) -> tuple[int, bool]:
    async with _open_provider(target, value) as provider:
        return await provider.requeue(job_ids), provider.durable


def _run_migrate(args: argparse.Namespace) -> int:
    _configure_quiet_logging(args)
    migrate = _import_migrate()
    try:
        version = asyncio.run(migrate(args.dsn, schema=args.schema))
    except ValueError as error:
        if isinstance(error, ObsJobsError):
            raise
        raise UsageError(str(error)) from error
    print(f"schema {args.schema!r} is at version {version}")
    return 0


def _import_migrate() -> Callable[..., Any]:
    # Imported here so that every other command works without the postgres extra.
    try:
        module = importlib.import_module("obsjobs.providers.postgres")
    except ImportError as error:
        missing = error.name or ""
        if missing in _POSTGRES_MODULES or missing.split(".")[0] in _POSTGRES_MODULES:
            raise ConfigurationError(
                f"PostgreSQL support is not installed (module {missing!r} is missing); "
                "install it with: pip install 'obsjobs[postgres]'"
            ) from error
        raise ConfigurationError(
            f"importing obsjobs.providers.postgres failed: {type(error).__name__}: {error}"
        ) from error
    migrate: Callable[..., Any] = module.migrate
    return migrate


# Helpers ------------------------------------------------------------------------------


@contextmanager
def _metrics_server(engine: Engine[Any], host: str, port: int | None) -> Iterator[None]:
    if port is None:
        yield
        return
    with open_metrics_server(engine, host, port):
        yield


@asynccontextmanager
async def _open_provider(target: Target, value: object) -> AsyncIterator[QueueProvider]:
    engine = await resolve_engine(target, value)
    provider = engine.provider
    await provider.open()
    try:
        yield provider
    finally:
        await provider.close()


def _configure_quiet_logging(args: argparse.Namespace) -> None:
    # Library logs go to stderr here, so that stdout carries only the command's output.
    configure_logging(choose_log_format(args.log_format), args.log_level)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def _note_not_durable() -> None:
    print(
        "obsjobs: note: this engine's provider keeps jobs in the memory of the process "
        "that runs it, so this command cannot see a running worker's jobs",
        file=sys.stderr,
    )


def _dead_job_record(job: DeadJob) -> dict[str, Any]:
    record = dataclasses.asdict(job)
    record["failed_at"] = job.failed_at.isoformat()
    return record


def _print_dead_table(jobs: list[DeadJob]) -> None:
    if not jobs:
        print("no dead jobs")
        return
    header = ("JOB_ID", "QUEUE", "JOB", "ATTEMPT", "FAILED_AT", "ERROR")
    rows = [
        (
            job.job_id,
            job.queue,
            job.name,
            str(job.attempt),
            job.failed_at.isoformat(timespec="seconds"),
            " ".join((job.error or "").split()),
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "worker": _run_worker,
    "demo": _run_demo,
    "dead": _run_dead,
    "requeue": _run_requeue,
    "migrate": _run_migrate,
}
