"""Tests for the obsjobs command: targets, errors, signals, metrics, OTLP export, dead jobs.

Commands that must be stopped by a signal run as ``python -m obsjobs`` subprocesses, each
bounded by a timeout and killed by its pid in a ``finally``. Everything else calls
``main()`` in this process.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import types
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from structlog.testing import capture_logs

from obsjobs import Engine, EngineStatus, MemoryQueue
from obsjobs.cli import main
from obsjobs.errors import ProviderUnavailableError
from obsjobs.protocols import JobResult, NewJob, Outcome
from obsjobs.runner import StopRequests, choose_log_format, serve

PROCESS_TIMEOUT_S = 60.0
"""A liveness bound for a subprocess or an awaited event: generous, never a timing check."""

# No proxy: every request in these tests goes straight to a loopback server.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

ONE_ERROR_LINE = re.compile(r"obsjobs: error: [^\n]+\n")

JOBS_MODULE = """
    import asyncio

    import structlog

    from obsjobs import Engine, MemoryQueue

    log = structlog.get_logger("jobsapp")

    engine = Engine(None, MemoryQueue(), shutdown_grace_s=30)


    @engine.job(name="tick")
    async def tick(state: None) -> None:
        log.info("test.tick_ran")


    engine.cron("* * * * * *", tick, name="every-second")
    number = 42


    async def sleeping() -> Engine[None]:
        sleeper = Engine(None, MemoryQueue(), shutdown_grace_s=3600)

        @sleeper.job(name="sleep_forever")
        async def sleep_forever(state: None) -> None:
            log.info("test.job_running")
            await asyncio.Event().wait()

        await sleep_forever.enqueue()
        return sleeper


    def needs_state(state: object) -> Engine[None]:
        return Engine(state)


    def returns_text() -> str:
        return "engine"


    def failing_factory() -> Engine[None]:
        raise RuntimeError("pool failed")


    async def started_engine() -> Engine[None]:
        started = Engine(None)
        await started.start()
        return started
"""


@pytest.fixture(autouse=True)
def isolated_process_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test in its own directory and undo what main() changes in this process."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    modules_before = set(sys.modules)
    structlog_config = structlog.get_config()
    yield
    structlog.configure(**structlog_config)
    # Forget the test's own modules, so the next test imports its own files afresh.
    for name in set(sys.modules) - modules_before:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(str(tmp_path)):
            del sys.modules[name]


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def assert_one_error_line(stderr: str, pattern: str) -> None:
    assert ONE_ERROR_LINE.fullmatch(stderr), stderr
    assert re.fullmatch(f"obsjobs: error: {pattern}\n", stderr), stderr
    assert "Traceback" not in stderr


# Child processes --------------------------------------------------------------------


class Child:
    """A running ``python -m obsjobs`` whose stdout lines are read by a thread."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "obsjobs", *args],
            cwd=cwd,
            env=env if env is not None else child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict):
                self.events.append(event)
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def next_line(self) -> str | None:
        """Return the next stdout line, or None once the process closed stdout."""
        try:
            return self._lines.get(timeout=PROCESS_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no output within {PROCESS_TIMEOUT_S}s") from None

    def wait_for_event(self, name: str) -> dict[str, Any]:
        """Read stdout until a JSON log event called ``name`` arrives, and return it."""
        while (line := self.next_line()) is not None:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                return event
        raise AssertionError(f"exited before logging {name}; stderr: {self.stderr}")

    def send(self, number: signal.Signals) -> None:
        os.kill(self.process.pid, number)

    def finish(self) -> int:
        """Wait for the exit and for both readers; return the exit status."""
        status = self.process.wait(timeout=PROCESS_TIMEOUT_S)
        for thread in self._threads:
            thread.join(timeout=PROCESS_TIMEOUT_S)
        return status

    def event_names(self) -> list[str]:
        return [str(event.get("event")) for event in self.events]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=PROCESS_TIMEOUT_S)


def child_env(**extra: str) -> dict[str, str]:
    """Return this environment without OTEL_ or proxy variables, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OTEL_") and "proxy" not in name.lower()
    }
    env.update(extra)
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Child:
        child = Child(list(args), cwd=tmp_path, env=env)
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.kill()


# A local OTLP/HTTP receiver ---------------------------------------------------------


class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf trace exports on 127.0.0.1 and keeps them decoded."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def span_names(self) -> set[str]:
        return {
            span.name
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        }

    def service_names(self) -> set[str]:
        return {
            attribute.value.string_value
            for request in self.requests
            for resource_spans in request.resource_spans
            for attribute in resource_spans.resource.attributes
            if attribute.key == "service.name"
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """Hold a listening socket on 127.0.0.1, so its port is in use."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


# worker: signals ----------------------------------------------------------------------


def test_worker_sigterm_stops_cleanly(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    """The first SIGTERM stops the worker gracefully, with exit status 0."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)
    child = spawn("worker", "jobsapp:engine", "--log-format", "json")
    child.wait_for_event("worker.started")

    child.send(signal.SIGTERM)
    status = child.finish()

    assert status == 0, child.stderr
    assert "worker.stopped" in child.event_names()
    requests = [e for e in child.events if e["event"] == "worker.stop_requested"]
    assert requests == [requests[0]]
    assert requests[0]["signal"] == "SIGTERM"
    assert requests[0]["force"] is False
    assert "Traceback" not in child.stderr


def test_worker_sigint_stops_cleanly(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    """SIGINT (Ctrl-C) stops the worker the same graceful way as SIGTERM."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)
    child = spawn("worker", "jobsapp:engine", "--log-format", "json")
    child.wait_for_event("worker.started")

    child.send(signal.SIGINT)
    status = child.finish()

    assert status == 0, child.stderr
    assert "worker.stopped" in child.event_names()
    assert "KeyboardInterrupt" not in child.stderr


def test_worker_second_sigterm_forces_stop(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    """A second SIGTERM cancels a job that would never finish within the grace."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)
    child = spawn("worker", "jobsapp:sleeping", "--log-format", "json")
    child.wait_for_event("test.job_running")

    child.send(signal.SIGTERM)
    child.wait_for_event("worker.stopping")
    child.send(signal.SIGTERM)
    status = child.finish()

    assert status == 0, child.stderr
    names = child.event_names()
    assert "worker.stop_forced" in names
    assert "job.cancelled" in names
    assert "worker.stopped" in names
    forced = [e for e in child.events if e["event"] == "worker.stop_requested" and e["force"]]
    assert len(forced) == 1


def test_worker_flags_override_engine(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    """--queues, --concurrency, --shutdown-grace and --no-scheduler change the engine."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)
    child = spawn(
        "worker",
        "jobsapp:engine",
        "--queues",
        "mail, default",
        "--concurrency",
        "3",
        "--shutdown-grace",
        "7.5",
        "--no-scheduler",
        "--log-format",
        "json",
    )
    started = child.wait_for_event("worker.started")
    child.send(signal.SIGTERM)
    stopping = child.wait_for_event("worker.stopping")
    status = child.finish()

    assert status == 0, child.stderr
    assert started["queues"] == ["mail", "default"]
    assert started["concurrency"] == 3
    assert started["schedules"] == []
    assert stopping["grace_s"] == 7.5


def test_worker_exports_spans_over_otlp(
    tmp_path: Path, spawn: Callable[..., Child], otlp_receiver: OtlpReceiver
) -> None:
    """An engine built at import, before the SDK is set up, still exports its spans."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)
    env = child_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint, OTEL_SERVICE_NAME="jobs-test"
    )
    child = spawn("worker", "jobsapp:engine", "--log-format", "json", env=env)
    child.wait_for_event("tracing.configured")
    child.wait_for_event("test.tick_ran")

    child.send(signal.SIGTERM)
    status = child.finish()

    assert status == 0, child.stderr
    names = otlp_receiver.span_names()
    assert "send default" in names
    assert "process default" in names
    assert otlp_receiver.service_names() == {"jobs-test"}


# demo ---------------------------------------------------------------------------------


def scrape(port: int) -> str:
    with OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=PROCESS_TIMEOUT_S) as response:
        body: bytes = response.read()
    return body.decode()


def test_demo_serves_metrics_while_running(spawn: Callable[..., Child]) -> None:
    """During the demo, /metrics on 127.0.0.1 reports job runs; it then stops by itself."""
    child = spawn("demo", "--duration", "3", "--metrics-port", "0", "--log-format", "json")
    port = child.wait_for_event("metrics.server_started")["port"]

    body = scrape(port)
    # Scrape again after each new log line until a job has finished: event-driven,
    # not a sleep, and bounded by the demo's own duration.
    while "obsjobs_job_runs_total{" not in body and child.next_line() is not None:
        body = scrape(port)
    status = child.finish()

    assert "obsjobs_job_runs_total{" in body
    assert status == 0, child.stderr
    assert "demo.summary" in child.event_names()


def test_demo_exports_spans_over_otlp(
    spawn: Callable[..., Child], otlp_receiver: OtlpReceiver
) -> None:
    """The demo exports producer, request and perform spans to the OTLP endpoint."""
    env = child_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint)
    child = spawn("demo", "--duration", "2", "--metrics-port", "0", "--log-format", "json", env=env)
    status = child.finish()

    assert status == 0, child.stderr
    names = otlp_receiver.span_names()
    assert "process default" in names
    assert "send default" in names
    assert "demo.request" in names


def test_demo_runs_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """main(["demo", ...]) runs, stops after --duration and logs its summary."""
    status = main(["demo", "--duration", "1", "--metrics-port", "0", "--log-format", "json"])

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    summary = [event for event in events if event["event"] == "demo.summary"]
    assert summary[0]["enqueued"] >= 1


def test_demo_busy_port_fails(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    """A demo whose metrics port is taken exits 1 with one line naming the port."""
    status = main(["demo", "--metrics-port", str(busy_port), "--log-level", "error"])

    assert status == 1
    assert_one_error_line(
        capsys.readouterr().err,
        rf"cannot serve /metrics on 127\.0\.0\.1:{busy_port}: address already in use; "
        "choose another port with --metrics-port",
    )


# worker: errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "pattern"),
    [
        (
            "jobsapp",
            2,
            r"argument MODULE:ATTRIBUTE: invalid target 'jobsapp': expected "
            r"MODULE:ATTRIBUTE, for example 'myapp\.jobs:engine'; see 'obsjobs worker --help'",
        ),
        (
            "jobsapp:",
            2,
            r"argument MODULE:ATTRIBUTE: invalid target 'jobsapp:': the attribute part '' "
            r"is not a dotted Python name; .*",
        ),
        (
            "no_such_module:engine",
            2,
            r"module 'no_such_module' not found in .+ or on sys\.path; check the name, or "
            r"run obsjobs from the directory that contains it",
        ),
        (
            "jobsapp:nothing",
            2,
            r"module 'jobsapp' has no attribute 'nothing' \(engines defined there: "
            r"engine\); check the part after the colon",
        ),
        (
            "jobsapp:number",
            2,
            r"jobsapp:number is a int; expected an obsjobs\.Engine or a function without "
            r"arguments that returns one",
        ),
        ("jobsapp:tick", 2, r"jobsapp:tick is a registered job, not an engine; .+"),
        ("jobsapp:needs_state", 2, r"jobsapp:needs_state requires arguments \(state\); .+"),
        (
            "jobsapp:returns_text",
            2,
            r"jobsapp:returns_text\(\) returned an object of type str; the factory "
            r"must return an obsjobs\.Engine",
        ),
        (
            "jobsapp:failing_factory",
            1,
            r"jobsapp:failing_factory\(\) raised RuntimeError: pool failed \(at .+"
            r"jobsapp\.py:\d+\)",
        ),
        (
            "jobsapp:started_engine",
            2,
            r"jobsapp:started_engine gave an engine that is already running; .+",
        ),
    ],
)
def test_worker_bad_target_fails(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
    status: int,
    pattern: str,
) -> None:
    """Each wrong target gives one error line that names it, and its exit status."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)

    result = main(["worker", target, "--log-level", "error"])

    assert result == status
    assert_one_error_line(capsys.readouterr().err, pattern)


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        (
            "x = 1 / 0\n",
            r"importing module 'brokenapp' failed: ZeroDivisionError: division by zero "
            r"\(at .+brokenapp\.py:1\)",
        ),
        (
            "import not_installed_dependency\n",
            r"importing module 'brokenapp' failed: ModuleNotFoundError: No module named "
            r"'not_installed_dependency' \(at .+brokenapp\.py:1\)",
        ),
        (
            "def broken(:\n",
            r"importing module 'brokenapp' failed: SyntaxError: .+\(brokenapp\.py, line 1\)",
        ),
    ],
)
def test_worker_module_import_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, pattern: str
) -> None:
    """A module that raises while importing gives exit status 1 and one line."""
    write_module(tmp_path, "brokenapp", source)

    result = main(["worker", "brokenapp:engine", "--log-level", "error"])

    assert result == 1
    assert_one_error_line(capsys.readouterr().err, pattern)


def test_worker_busy_metrics_port_fails(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A metrics port already in use gives exit status 1 and one line naming it."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)

    result = main(
        ["worker", "jobsapp:engine", "--metrics-port", str(busy_port), "--log-level", "error"]
    )

    assert result == 1
    assert_one_error_line(
        capsys.readouterr().err,
        rf"cannot serve /metrics on 127\.0\.0\.1:{busy_port}: address already in use; "
        "choose another port with --metrics-port",
    )


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        (
            ["--concurrency", "0"],
            r"argument --concurrency: expected a whole number of 1 or more, got '0'; "
            r"see 'obsjobs worker --help'",
        ),
        (
            ["--metrics-port", "70000"],
            r"argument --metrics-port: expected a port from 0 to 65535, got '70000'; .+",
        ),
        (
            ["--shutdown-grace", "nan"],
            r"argument --shutdown-grace: expected seconds, 0 or more, got 'nan'; .+",
        ),
        (["--queues", "a,,b"], r"argument --queues: invalid queue name ''.+"),
        (["--queues", "a,a"], r"argument --queues: queue names repeat in 'a,a'; .+"),
        (["--log-level", "loud"], r"argument --log-level: invalid choice: 'loud'.+"),
        (
            ["--no-worker", "--no-scheduler"],
            r"--no-worker and --no-scheduler together leave nothing to run; drop one of them",
        ),
        (["--bogus"], r"unrecognized arguments: --bogus; see 'obsjobs --help'"),
    ],
)
def test_worker_bad_option_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], pattern: str
) -> None:
    """A wrong option gives exit status 2 and one line naming the option."""
    write_module(tmp_path, "jobsapp", JOBS_MODULE)

    result = main(["worker", "jobsapp:engine", *arguments])

    assert result == 2
    assert_one_error_line(capsys.readouterr().err, pattern)


def test_command_missing_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """obsjobs without a command gives exit status 2 and one line."""
    assert main([]) == 2
    assert_one_error_line(
        capsys.readouterr().err,
        r"the following arguments are required: COMMAND; see 'obsjobs --help'",
    )


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """--help and --version print to stdout and return 0."""
    assert main(["worker", "--help"]) == 0
    assert "MODULE:ATTRIBUTE" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert re.fullmatch(r"obsjobs \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_log_format_auto_without_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """auto picks JSON when standard output is not a terminal, as under capsys."""
    assert choose_log_format("auto") == "json"
    assert choose_log_format("console") == "console"


# dead and requeue ---------------------------------------------------------------------

DEAD_MODULE = """
    from obsjobs import Engine, MemoryQueue

    QUEUE = MemoryQueue()


    def engine() -> Engine[None]:
        return Engine(None, QUEUE)
"""


@pytest.fixture
def dead_job_ids(tmp_path: Path) -> list[str]:
    """Write deadapp.py and make two dead jobs in its queue: one in mail, one in default."""
    write_module(tmp_path, "deadapp", DEAD_MODULE)
    sys.path.insert(0, str(tmp_path))
    import deadapp  # type: ignore[import-not-found]

    async def bury() -> list[str]:
        memory_queue: MemoryQueue = deadapp.QUEUE
        new_jobs = [
            NewJob(name="send_email", queue="mail", kwargs={"to": "a@example.org"}),
            NewJob(name="import_csv", queue="default", args=[7]),
        ]
        results = await memory_queue.enqueue(new_jobs)
        claimed = await memory_queue.claim(["mail", "default"], 10, worker_id="test")
        for record in claimed:
            failure = JobResult(
                Outcome.DEAD,
                started_at=datetime.now(UTC),
                error=f"ValueError: {record.name} failed\nsecond line",
                error_type="ValueError",
            )
            await memory_queue.finish(record, failure)
        return [result.job_id for result in results]

    return asyncio.run(bury())


def test_dead_lists_jobs_as_table(
    dead_job_ids: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """dead prints a header and one line per dead job, with the error on that line."""
    assert main(["dead", "deadapp:engine"]) == 0

    output = capsys.readouterr()
    lines = output.out.splitlines()
    assert lines[0].split() == ["JOB_ID", "QUEUE", "JOB", "ATTEMPT", "FAILED_AT", "ERROR"]
    assert len(lines) == 3
    assert any(line.startswith(dead_job_ids[0]) for line in lines)
    assert any("ValueError: send_email failed second line" in line for line in lines)
    assert output.err.startswith("obsjobs: note: ")


def test_dead_filters_queue_as_json(
    dead_job_ids: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """dead --queue --json prints one JSON object per job of that queue, with arguments."""
    assert main(["dead", "deadapp:engine", "--queue", "mail", "--json"]) == 0

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["job_id"] for record in records] == [dead_job_ids[0]]
    assert records[0]["kwargs"] == {"to": "a@example.org"}
    assert records[0]["queue"] == "mail"


def test_requeue_moves_dead_jobs(
    dead_job_ids: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """requeue moves the given dead jobs back, and dead no longer lists them."""
    assert main(["requeue", "deadapp:engine", *dead_job_ids]) == 0
    assert capsys.readouterr().out == "requeued 2 of 2 jobs\n"

    assert main(["dead", "deadapp:engine"]) == 0
    assert capsys.readouterr().out == "no dead jobs\n"


def test_requeue_unknown_id_fails(
    dead_job_ids: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """requeue with an id that is not dead exits 1 after moving the others."""
    assert main(["requeue", "deadapp:engine", dead_job_ids[0], "no-such-id"]) == 1

    output = capsys.readouterr()
    assert output.out == "requeued 1 of 2 jobs\n"
    error_line = output.err.splitlines()[-1] + "\n"
    assert_one_error_line(
        error_line, r"1 of 2 given job ids were not dead jobs of this provider .+"
    )


# migrate ------------------------------------------------------------------------------


def test_migrate_without_postgres_module_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the postgres provider, migrate names the extra to install."""
    monkeypatch.setitem(sys.modules, "obsjobs.providers.postgres", None)

    assert main(["migrate", "--dsn", "postgresql://app@127.0.0.1/app"]) == 1
    assert_one_error_line(
        capsys.readouterr().err,
        r"PostgreSQL support is not installed \(module 'obsjobs\.providers\.postgres' is "
        r"missing\); install it with: pip install 'obsjobs\[postgres\]'",
    )


def test_migrate_calls_provider_migrate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """migrate passes the DSN and schema to the provider and prints the version."""
    calls: list[tuple[str, str]] = []

    async def migrate(conninfo: str, schema: str = "obsjobs") -> int:
        calls.append((conninfo, schema))
        return 3

    fake = types.ModuleType("obsjobs.providers.postgres")
    fake.migrate = migrate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "obsjobs.providers.postgres", fake)

    status = main(["migrate", "--dsn", "postgresql://app@127.0.0.1/app", "--schema", "jobs"])

    assert status == 0
    assert calls == [("postgresql://app@127.0.0.1/app", "jobs")]
    assert capsys.readouterr().out == "schema 'jobs' is at version 3\n"


def test_migrate_unreachable_server_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that refuses the connection gives exit status 1 and one line."""
    status = main(["migrate", "--dsn", "postgresql://obsjobs@127.0.0.1:1/obsjobs"])

    assert status == 1
    assert_one_error_line(capsys.readouterr().err, r"PostgreSQL is unavailable.+")


def test_migrate_provider_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A multi-line provider error is printed on one line, without a traceback."""

    async def migrate(conninfo: str, schema: str = "obsjobs") -> int:
        raise ProviderUnavailableError(
            "connection refused\n\tIs the server running?", provider="postgres"
        )

    fake = types.ModuleType("obsjobs.providers.postgres")
    fake.migrate = migrate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "obsjobs.providers.postgres", fake)

    assert main(["migrate", "--dsn", "postgresql://app@127.0.0.1/app"]) == 1
    assert_one_error_line(capsys.readouterr().err, r"connection refused Is the server running\?")


# runner -------------------------------------------------------------------------------


async def test_stop_requests_force_second() -> None:
    """The first stop request lets the job run on; the second one cancels it."""
    engine: Engine[None] = Engine(None, MemoryQueue(), shutdown_grace_s=3600)
    running = asyncio.Event()

    @engine.job(name="endless")
    async def endless(state: None) -> None:
        running.set()
        await asyncio.Event().wait()

    await engine.start()
    await endless.enqueue()
    await asyncio.wait_for(running.wait(), PROCESS_TIMEOUT_S)
    stops = StopRequests(engine)
    stops.arm()

    with capture_logs() as logs:
        stops.request("test")
        await asyncio.sleep(0)
        assert engine.status is EngineStatus.STOPPING
        stops.request("test")
        await asyncio.wait_for(engine.wait_stopped(), PROCESS_TIMEOUT_S)

    requests = [entry for entry in logs if entry["event"] == "worker.stop_requested"]
    assert [entry["force"] for entry in requests] == [False, True]
    assert "job.cancelled" in [entry["event"] for entry in logs]


async def test_stop_requests_wait_for_arm() -> None:
    """A request that arrives while the engine starts is applied when armed."""
    engine: Engine[None] = Engine(None, MemoryQueue())
    stops = StopRequests(engine)

    stops.request("test")
    await engine.start()
    status_before_arm = engine.status
    stops.arm()
    await asyncio.wait_for(engine.wait_stopped(), PROCESS_TIMEOUT_S)

    assert status_before_arm is EngineStatus.RUNNING
    assert engine.status is EngineStatus.STOPPED


async def test_serve_logs_failed_companion() -> None:
    """A companion that raises is logged, and the engine still stops at the duration."""
    engine: Engine[None] = Engine(None, MemoryQueue())

    async def broken() -> None:
        raise RuntimeError("producer broke")

    with capture_logs() as logs:
        stops = await asyncio.wait_for(
            serve(engine, duration_s=0.01, companions=[broken]), PROCESS_TIMEOUT_S
        )

    failures = [entry for entry in logs if entry["event"] == "worker.task_failed"]
    assert failures[0]["error"] == "RuntimeError('producer broke')"
    assert engine.status is EngineStatus.STOPPED
    assert stops.count == 1


async def test_serve_stops_engine_when_start_fails() -> None:
    """An engine whose provider fails to open is stopped, and the error propagates."""

    class FailingQueue(MemoryQueue):
        async def open(self) -> None:
            raise ProviderUnavailableError("database down", provider="memory")

    engine: Engine[None] = Engine(None, FailingQueue())

    with pytest.raises(ProviderUnavailableError, match=r"^database down$"):
        await serve(engine)
    assert engine.status is EngineStatus.STOPPED


def test_main_module_runs_command(tmp_path: Path) -> None:
    """python -m obsjobs runs the same command and exit status as main()."""
    completed = subprocess.run(
        [sys.executable, "-m", "obsjobs", "worker", "no_such_module:engine"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )

    assert completed.returncode == 2
    assert_one_error_line(completed.stderr, r"module 'no_such_module' not found .+")


def test_worker_start_failure_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider that cannot open makes the worker exit 1 with one line."""
    write_module(
        tmp_path,
        "downapp",
        """
        from obsjobs import Engine, MemoryQueue, ProviderUnavailableError


        class DownQueue(MemoryQueue):
            async def open(self) -> None:
                raise ProviderUnavailableError(
                    "database down; start it and retry", provider="memory"
                )


        engine = Engine(None, DownQueue())
        """,
    )

    assert main(["worker", "downapp:engine", "--log-level", "error"]) == 1
    assert_one_error_line(capsys.readouterr().err, r"database down; start it and retry")
