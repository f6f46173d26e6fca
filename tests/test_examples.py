"""Tests for the examples: each runs for a short, bounded time, in-process and as a script."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from obsjobs import EngineStatus

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT_S = 60.0
"""A liveness bound for a run or a subprocess: generous, never a timing check."""


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a new module, so each test gets a fresh engine."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class body runs.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def run_script(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run an example as a user would, bounded by TIMEOUT_S; the process is killed on timeout."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


async def test_embedded_replies_to_requests() -> None:
    """The embedded service replies to every request with the id of the job it enqueued."""
    embedded = load_example("embedded")

    replies = await asyncio.wait_for(embedded.run(port=0, duration_s=0.5), TIMEOUT_S)

    assert replies
    for reply in replies:
        assert re.fullmatch(r"queued \S+", reply)
    assert embedded.engine.status is EngineStatus.STOPPED


async def test_embedded_rejects_empty_request() -> None:
    """An empty request gets an error reply and enqueues nothing."""
    embedded = load_example("embedded")
    server = await asyncio.start_server(embedded.handle_sign_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async with server:
        reply = await asyncio.wait_for(embedded.sign_up("127.0.0.1", port, ""), TIMEOUT_S)

    assert reply == "error: send a user name on one line"
    stats = await embedded.engine.provider.stats()
    assert stats == []


def test_embedded_script_stops_by_itself() -> None:
    """python examples/embedded.py --duration 2 serves, stops and exits 0."""
    completed = run_script("embedded", "--duration", "2", "--port", "0")

    assert completed.returncode == 0, completed.stderr
    assert "service.stopped" in completed.stdout
    assert "welcome.sent" in completed.stdout


async def test_demo_service_runs_and_stops() -> None:
    """The demo service example runs the producer and stops after its duration."""
    demo_service = load_example("demo_service")

    engine = await asyncio.wait_for(demo_service.run(duration_s=0.5, metrics_port=0), TIMEOUT_S)

    assert engine.status is EngineStatus.STOPPED
    assert engine.state.enqueued >= 1


@pytest.mark.parametrize("name", ["demo_service", "embedded"])
def test_example_script_help_exits_zero(name: str) -> None:
    """Each example script has a --help that exits 0."""
    completed = run_script(name, "--help")

    assert completed.returncode == 0, completed.stderr
    assert "--duration" in completed.stdout


def test_demo_service_script_stops_by_itself() -> None:
    """python examples/demo_service.py --duration 2 exits 0 and logs its summary."""
    completed = run_script("demo_service", "--duration", "2", "--metrics-port", "0")

    assert completed.returncode == 0, completed.stderr
    assert "demo.summary" in completed.stdout
