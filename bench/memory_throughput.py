"""Throughput and enqueue-to-start latency of obsjobs on the in-memory queue.

Every variant runs the same job body (count the run, set an event on the last one) in
one process, interleaved in rounds with a rotating order, so that machine noise hits all
variants alike. The two floors are bare asyncio: floor A creates the tasks in the
worker's shape, floor B adds the same OpenTelemetry spans without obsjobs. The output is
a table on standard output and a JSON file; docs/benchmarks.md explains the figures.

Usage::

    python bench/memory_throughput.py [--jobs N] [--rounds R] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import hashlib
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, NoOpTracerProvider, SpanKind
from prometheus_client import CollectorRegistry

import obsjobs
from obsjobs import Engine, MemoryQueue, Metrics, compose

QUEUE = "default"
JOB_NAME = "bench.noop"
RESULTS_PATH = Path(__file__).parent / "results" / "memory.json"
TARGET_OFF_VS_FLOOR_A = 0.35
TARGET_FULL_VS_FLOOR_B = 0.70
TARGET_P50_LATENCY_S = 0.001
IDLE_PAUSE_S = 0.002
"""Pause between latency samples, long enough for the worker to block in ``wait`` again."""


SPAN_QUEUE_SIZE = 1 << 20
"""Batch queue size, large enough to hold every span of one run."""


@dataclass(slots=True)
class RunState:
    """The state every job gets, which counts runs and sets ``done`` on the last one."""

    target: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0
    started_at: float = 0.0


async def count_run(state: RunState) -> None:
    """Count one run. This is the job body of every throughput variant."""
    state.count += 1
    if state.count == state.target:
        state.done.set()


async def mark_start(state: RunState) -> None:
    """Record when the job started and signal its end. This is the latency job body."""
    state.started_at = time.perf_counter()
    state.done.set()


class DroppingExporter(SpanExporter):
    """A span exporter that counts spans and drops them, so export costs almost nothing."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Count ``spans`` and report success."""
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Do nothing: there is no connection to close."""


class EndedSpans(SpanProcessor):
    """A span processor that counts ended spans, to tell how many the batch processor dropped."""

    def __init__(self) -> None:
        self.count = 0

    def on_end(self, span: ReadableSpan) -> None:
        """Count one ended span."""
        self.count += 1


@dataclass(slots=True)
class Telemetry:
    """The SDK tracer provider shared by floor B and the traced obsjobs variants."""

    provider: TracerProvider
    exporter: DroppingExporter
    ended: EndedSpans

    @classmethod
    def create(cls) -> Telemetry:
        """Build a provider with a ``BatchSpanProcessor`` and a dropping exporter.

        The batch queue holds ``SPAN_QUEUE_SIZE`` spans instead of the SDK's 2,048, so
        that no variant drops spans: a dropped span skips the export thread's work and
        would flatter whichever variant dropped more. A second processor counts ended
        spans, so that spans dropped anyway show in the results. The SDK's own "Queue
        full" warning cannot be counted, because opentelemetry-sdk 1.45 passes it
        through a filter that logs it at most once per 20-second window.
        """
        exporter = DroppingExporter()
        ended = EndedSpans()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=SPAN_QUEUE_SIZE))
        provider.add_span_processor(ended)
        return cls(provider, exporter, ended)

    def mark(self) -> tuple[int, int]:
        """Return the exported and ended span counts so far, for :meth:`since` after a run."""
        return self.exporter.exported, self.ended.count

    def since(self, mark: tuple[int, int]) -> tuple[int, int]:
        """Flush, then return the spans exported and dropped since ``mark``."""
        self.provider.force_flush()
        exported = self.exporter.exported - mark[0]
        return exported, self.ended.count - mark[1] - exported


@dataclass(slots=True)
class Outcome:
    """One timed run: wall-clock and CPU seconds, and the spans it exported and dropped.

    CPU time is the whole process's, the span export thread included. It leaves out
    the time other programs held the CPU, so it varies less on a busy machine.
    """

    seconds: float
    cpu_seconds: float
    spans: int = 0
    dropped_spans: int = 0


@dataclass(slots=True)
class Stopwatch:
    """Wall-clock and process CPU time since creation."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)

    def elapsed(self) -> tuple[float, float]:
        """Return the wall-clock and CPU seconds since the stopwatch was created."""
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


# Floors ---------------------------------------------------------------------------------


async def run_in_worker_shape(
    jobs: Sequence[Callable[[], Coroutine[Any, Any, None]]], concurrency: int
) -> None:
    """Run ``jobs`` as tasks the way the obsjobs worker does: at most ``concurrency`` at once.

    The loop takes as many jobs as there are free slots, creates one task each with a
    done callback that frees the slot and sets an event, and waits for that event when
    no slot is free.
    """
    in_flight: set[asyncio.Task[None]] = set()
    slot_freed = asyncio.Event()

    def job_done(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        slot_freed.set()

    index = 0
    while index < len(jobs):
        free = concurrency - len(in_flight)
        if free <= 0:
            slot_freed.clear()
            await slot_freed.wait()
            continue
        for job in jobs[index : index + free]:
            task = asyncio.create_task(job())
            in_flight.add(task)
            task.add_done_callback(job_done)
        index += free


async def floor_bare(jobs: int, concurrency: int) -> Outcome:
    """Floor A: one task per job body, in the worker's shape, nothing else."""
    state = RunState(jobs)
    watch = Stopwatch()
    await run_in_worker_shape([lambda: count_run(state)] * jobs, concurrency)
    await state.done.wait()
    return Outcome(*watch.elapsed())


def _messaging_attributes(operation: str) -> dict[str, str]:
    return {
        "messaging.system": "obsjobs",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": QUEUE,
        "messaging.obsjobs.provider": "memory",
        "messaging.obsjobs.job.name": JOB_NAME,
    }


async def floor_traced(jobs: int, concurrency: int, telemetry: Telemetry) -> Outcome:
    """Floor B: floor A plus a producer and a consumer span per job, without obsjobs.

    Per job, a ``send default`` PRODUCER span injects the W3C context into a dict. Later
    a task extracts that context and runs the body inside a ``process default``
    CONSUMER span whose parent is the producer and which also links to it.
    """
    tracer = telemetry.provider.get_tracer("bench.floor")
    state = RunState(jobs)
    mark = telemetry.mark()

    async def consume(headers: dict[str, str], message_id: str) -> None:
        parent = propagate.extract(headers)
        producer = trace.get_current_span(parent).get_span_context()
        with tracer.start_as_current_span(
            f"process {QUEUE}", context=parent, kind=SpanKind.CONSUMER, links=[Link(producer)]
        ) as span:
            if span.is_recording():
                span.set_attributes(_messaging_attributes("process"))
                span.set_attribute("messaging.message.id", message_id)
                span.set_attribute("messaging.obsjobs.attempt", 1)
            await count_run(state)

    watch = Stopwatch()
    bodies: list[Callable[[], Coroutine[Any, Any, None]]] = []
    for number in range(jobs):
        headers: dict[str, str] = {}
        message_id = str(number)
        with tracer.start_as_current_span(f"send {QUEUE}", kind=SpanKind.PRODUCER) as span:
            if span.is_recording():
                span.set_attributes(_messaging_attributes("send"))
            propagate.inject(headers)
            span.set_attribute("messaging.message.id", message_id)
        bodies.append(functools.partial(consume, headers, message_id))
    await run_in_worker_shape(bodies, concurrency)
    await state.done.wait()
    elapsed = watch.elapsed()
    return Outcome(*elapsed, *telemetry.since(mark))


# obsjobs variants -----------------------------------------------------------------------


def _build_engine(
    state: RunState, concurrency: int, metrics: bool, telemetry: Telemetry | None
) -> tuple[Engine[RunState], CollectorRegistry | None]:
    registry = CollectorRegistry() if metrics else None
    provider = compose(MemoryQueue(), Metrics(registry=registry)) if metrics else MemoryQueue()
    tracer_provider = telemetry.provider if telemetry is not None else NoOpTracerProvider()
    engine = Engine(state, provider, tracer_provider=tracer_provider, concurrency=concurrency)
    return engine, registry


async def run_engine(
    jobs: int,
    concurrency: int,
    *,
    metrics: bool,
    telemetry: Telemetry | None,
    batch: int | None,
) -> Outcome:
    """Enqueue ``jobs`` no-op registered jobs to a running engine and time until all ran.

    ``batch=None`` enqueues one by one with ``await job.enqueue()``. Otherwise
    ``engine.enqueue_many`` gets lists of ``batch`` messages. The clock starts before
    the first enqueue and stops when the last job body has run; engine start and stop
    are outside it.
    """
    state = RunState(jobs)
    engine, registry = _build_engine(state, concurrency, metrics, telemetry)
    job = engine.job(name=JOB_NAME)(count_run)
    mark = telemetry.mark() if telemetry is not None else (0, 0)
    async with engine:
        watch = Stopwatch()
        if batch is None:
            for _ in range(jobs):
                await job.enqueue()
        else:
            for first in range(0, jobs, batch):
                size = min(batch, jobs - first)
                await engine.enqueue_many([job.message() for _ in range(size)])
        await state.done.wait()
        elapsed = watch.elapsed()
        worker = engine.statistics()
    _check_all_ran(jobs, worker.succeeded if worker is not None else 0, registry)
    spans = telemetry.since(mark) if telemetry is not None else (0, 0)
    return Outcome(*elapsed, *spans)


def _check_all_ran(jobs: int, succeeded: int, registry: CollectorRegistry | None) -> None:
    # A benchmark that lost jobs would report a rate for work it never did.
    if succeeded != jobs:
        raise RuntimeError(f"expected {jobs} succeeded jobs, the worker counted {succeeded}")
    if registry is not None:
        labels = {"queue": QUEUE, "job": JOB_NAME}
        runs = registry.get_sample_value("obsjobs_job_runs_total", labels)
        if runs != jobs:
            raise RuntimeError(f"expected {jobs} in obsjobs_job_runs_total, found {runs}")


async def measure_latency(
    samples: int, concurrency: int, *, traced: Telemetry | None
) -> list[float]:
    """Return ``samples`` enqueue-to-start latencies, in seconds, on an idle worker.

    Telemetry is off when ``traced`` is ``None``, and metrics and tracing are on
    otherwise. Each sample is taken after a pause that lets the worker go back to
    waiting for jobs.
    """
    state = RunState(1)
    engine, _ = _build_engine(state, concurrency, traced is not None, traced)
    job = engine.job(name=JOB_NAME)(mark_start)
    latencies: list[float] = []
    async with engine:
        for _ in range(samples):
            await asyncio.sleep(IDLE_PAUSE_S)
            state.done.clear()
            enqueued = time.perf_counter()
            await job.enqueue()
            await state.done.wait()
            latencies.append(state.started_at - enqueued)
    return latencies


# Rounds ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """One measured configuration: a key for the JSON file, a label for the table."""

    key: str
    label: str
    run: Callable[[int], Coroutine[Any, Any, Outcome]]


def build_variants(concurrency: int, batch: int, telemetry: Telemetry) -> list[Variant]:
    """Return the throughput variants, floors first."""

    def engine(
        metrics: bool, traced: bool, batched: bool
    ) -> Callable[[int], Coroutine[Any, Any, Outcome]]:
        return lambda jobs: run_engine(
            jobs,
            concurrency,
            metrics=metrics,
            telemetry=telemetry if traced else None,
            batch=batch if batched else None,
        )

    return [
        Variant("floor_a", "A: bare asyncio", lambda n: floor_bare(n, concurrency)),
        Variant(
            "floor_b", "B: asyncio + OTel spans", lambda n: floor_traced(n, concurrency, telemetry)
        ),
        Variant("off_one", "obsjobs off, enqueue()", engine(False, False, False)),
        Variant("off_many", f"obsjobs off, enqueue_many({batch})", engine(False, False, True)),
        Variant("metrics_one", "metrics, enqueue()", engine(True, False, False)),
        Variant("metrics_many", f"metrics, enqueue_many({batch})", engine(True, False, True)),
        Variant("full_one", "metrics+tracing, enqueue()", engine(True, True, False)),
        Variant("full_many", f"metrics+tracing, enqueue_many({batch})", engine(True, True, True)),
    ]


RATIOS = {
    "off_one / floor_a": ("off_one", "floor_a"),
    "off_many / floor_a": ("off_many", "floor_a"),
    "metrics_one / off_one": ("metrics_one", "off_one"),
    "full_one / floor_b": ("full_one", "floor_b"),
    "full_many / floor_b": ("full_many", "floor_b"),
    "floor_b / floor_a": ("floor_b", "floor_a"),
}
"""Throughput ratios, each computed within a round and then medianed over the rounds."""


def run_once(variant: Variant, jobs: int) -> Outcome:
    """Run ``variant`` in a fresh event loop, after a garbage collection outside the clock."""
    gc.collect()
    return asyncio.run(variant.run(jobs))


def run_rounds(variants: list[Variant], jobs: int, rounds: int) -> dict[str, list[Outcome]]:
    """Run every variant once per round, rotating the order by one each round."""
    for variant in variants:
        run_once(variant, max(jobs // 10, 100))  # warm-up, not recorded
    outcomes: dict[str, list[Outcome]] = {variant.key: [] for variant in variants}
    for round_index in range(rounds):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            outcomes[variant.key].append(run_once(variant, jobs))
        print(f"round {round_index + 1}/{rounds} done", file=sys.stderr)
    return outcomes


def summarise(variants: list[Variant], outcomes: dict[str, list[Outcome]], jobs: int) -> Any:
    """Return rates per variant and per round, medians and the per-round ratios.

    Each ratio is computed twice: from wall-clock rates (the figure the targets use)
    and from CPU-time rates (less disturbed by other programs on the machine).
    """
    rates = {key: [jobs / run.seconds for run in runs] for key, runs in outcomes.items()}
    cpu_rates = {key: [jobs / run.cpu_seconds for run in runs] for key, runs in outcomes.items()}
    table = {}
    for variant in variants:
        runs = outcomes[variant.key]
        median_rate = statistics.median(rates[variant.key])
        table[variant.key] = {
            "label": variant.label,
            "jobs_per_s": [round(rate) for rate in rates[variant.key]],
            "median_jobs_per_s": round(median_rate),
            "median_us_per_job": round(1e6 / median_rate, 2),
            "median_cpu_us_per_job": round(1e6 / statistics.median(cpu_rates[variant.key]), 2),
            "spans_exported_per_run": [run.spans for run in runs],
            "spans_dropped_per_run": [run.dropped_spans for run in runs],
        }
    ratios = {}
    for name, (top, bottom) in RATIOS.items():
        per_round = [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]
        cpu_per_round = [a / b for a, b in zip(cpu_rates[top], cpu_rates[bottom], strict=True)]
        ratios[name] = {
            "per_round": [round(ratio, 3) for ratio in per_round],
            "median": round(statistics.median(per_round), 3),
            "cpu_per_round": [round(ratio, 3) for ratio in cpu_per_round],
            "cpu_median": round(statistics.median(cpu_per_round), 3),
        }
    return {"variants": table, "ratios": ratios}


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """Return p50, p99 and max of ``latencies`` in microseconds."""
    return {
        "samples": len(latencies),
        "p50_us": round(percentile(latencies, 0.50) * 1e6, 1),
        "p99_us": round(percentile(latencies, 0.99) * 1e6, 1),
        "max_us": round(max(latencies) * 1e6, 1),
    }


# Report ---------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Return the CPU count and model, the Python version and the package versions."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = ("obsjobs", "opentelemetry-api", "opentelemetry-sdk", "prometheus-client")
    # The package version does not change while the library is edited, so a digest of
    # its sources identifies the code that a result file measured.
    digest = hashlib.sha256()
    for source in sorted(Path(obsjobs.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return {
        "obsjobs_sources_sha256": digest.hexdigest()[:16],
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: metadata.version(name) for name in (*packages, "structlog")},
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def targets(summary: Any, latency: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Compare the medians with the project's targets, by wall-clock and by CPU time."""
    verdicts: dict[str, Any] = {}
    for name, ratio_name, target in (
        ("off_one >= 35% of floor A", "off_one / floor_a", TARGET_OFF_VS_FLOOR_A),
        ("full_one >= 70% of floor B", "full_one / floor_b", TARGET_FULL_VS_FLOOR_B),
    ):
        ratio = summary["ratios"][ratio_name]
        verdicts[name] = {
            "wall": ratio["median"],
            "cpu": ratio["cpu_median"],
            "met_wall": ratio["median"] >= target,
            "met_cpu": ratio["cpu_median"] >= target,
        }
    for name, figures in latency.items():
        verdicts[f"p50 latency < 1 ms ({name})"] = {
            "p50_us": figures["p50_us"],
            "met": figures["p50_us"] < TARGET_P50_LATENCY_S * 1e6,
        }
    return verdicts


def print_report(summary: Any, latency: dict[str, dict[str, float]], met: dict[str, Any]) -> None:
    """Print the throughput table, the ratios, the latencies and the targets."""
    print(
        f"{'variant':38} {'jobs/s':>7} {'us/job':>7} {'cpu us':>7} {'dropped':>7}"
        "  per round (jobs/s)"
    )
    for figures in summary["variants"].values():
        rounds = " ".join(f"{rate:>6}" for rate in figures["jobs_per_s"])
        print(
            f"{figures['label']:38} {figures['median_jobs_per_s']:>7} "
            f"{figures['median_us_per_job']:>7} {figures['median_cpu_us_per_job']:>7} "
            f"{sum(figures['spans_dropped_per_run']):>7}  {rounds}"
        )
    print(f"\n{'ratio, per round then median':38} {'wall':>7} {'cpu':>7}  per round (wall)")
    for name, ratio in summary["ratios"].items():
        print(f"{name:38} {ratio['median']:>7} {ratio['cpu_median']:>7}  {ratio['per_round']}")
    print(f"\n{'enqueue-to-start latency':38} {'p50 us':>7} {'p99 us':>7} {'max us':>7}")
    for name, figures in latency.items():
        print(f"{name:38} {figures['p50_us']:>7} {figures['p99_us']:>7} {figures['max_us']:>7}")
    print()
    for name, verdict in met.items():
        if "met" in verdict:
            print(f"{name:38} {_verdict(verdict['met'])} (p50 {verdict['p50_us']} us)")
        else:
            wall, cpu = _verdict(verdict["met_wall"]), _verdict(verdict["met_cpu"])
            print(f"{name:38} wall {verdict['wall']} {wall}, cpu {verdict['cpu']} {cpu}")


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def profile(variant: Variant, jobs: int, top: int) -> None:
    """Run ``variant`` once under cProfile and print the ``top`` functions by own time."""
    run_once(variant, max(jobs // 10, 100))  # warm-up, not profiled
    profiler = cProfile.Profile()
    profiler.enable()
    outcome = run_once(variant, jobs)
    profiler.disable()
    print(f"\n=== {variant.label}: {jobs} jobs in {outcome.seconds:.3f} s under cProfile ===")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    print(f"--- obsjobs functions by cumulative time, {variant.label} ---")
    stats.sort_stats("cumulative").print_stats("/obsjobs/", top)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every variant")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency")
    parser.add_argument("--batch", type=int, default=100, help="jobs per enqueue_many call")
    parser.add_argument(
        "--latency-samples", type=int, default=2_000, help="latency samples per variant"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of measuring, profile one run of telemetry off and of metrics+tracing",
    )
    arguments = parser.parse_args(argv)
    for name in ("jobs", "rounds", "concurrency", "batch", "latency_samples"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON results."""
    arguments = parse_arguments(argv)
    # A production service filters debug events at the call, so the worker's per-job
    # debug calls return without rendering. Start and stop events go to /dev/null.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(open(os.devnull, "w")),  # noqa: SIM115
    )
    telemetry = Telemetry.create()
    variants = build_variants(arguments.concurrency, arguments.batch, telemetry)
    if arguments.profile:
        by_key = {variant.key: variant for variant in variants}
        profile(by_key["off_one"], arguments.jobs, 15)
        profile(by_key["full_one"], arguments.jobs, 15)
        return

    info = machine_info()
    started = time.perf_counter()
    outcomes = run_rounds(variants, arguments.jobs, arguments.rounds)
    summary = summarise(variants, outcomes, arguments.jobs)
    latency = {
        name: latency_summary(
            asyncio.run(
                measure_latency(arguments.latency_samples, arguments.concurrency, traced=traced)
            )
        )
        for name, traced in (("telemetry off", None), ("metrics+tracing", telemetry))
    }
    met = targets(summary, latency)
    info["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    print_report(summary, latency, met)
    print(f"\ntotal {time.perf_counter() - started:.1f} s", file=sys.stderr)

    results = {
        "command": " ".join(["python", *sys.argv]),
        "settings": {
            key: value for key, value in vars(arguments).items() if key not in ("output", "profile")
        },
        "machine": info,
        **summary,
        "latency": latency,
        "targets": met,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    telemetry.provider.shutdown()


if __name__ == "__main__":
    main()
