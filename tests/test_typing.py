"""Checks that enqueueing a registered job is type-checked against its signature."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HEADER = """
from dataclasses import dataclass
from obsjobs import Engine

@dataclass
class State:
    name: str

engine = Engine(State(name="x"))

@engine.job(name="send_email")
async def send_email(state: State, to: str, *, retries: int = 0) -> None:
    pass

async def main() -> None:
"""

TIMEOUT_S = 180
REPO = Path(__file__).resolve().parent.parent


def run_mypy(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "snippet.py"
    script.write_text(HEADER + "".join(f"    {line}\n" for line in body.splitlines()))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
        # An editable install is found through an import hook that mypy does not run,
        # so point mypy at the source tree.
        env={**os.environ, "MYPYPATH": str(REPO)},
        check=False,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("await send_email.enqueue(to=3)", r'Argument "to" .* has incompatible type "int"'),
        ('await send_email.enqueue("a@b", retries="2")', r'Argument "retries" .* "str"'),
        ("await send_email.enqueue()", r'Missing positional argument "to"'),
        ('await send_email.enqueue("a@b", cc="c@d")', r'Unexpected keyword argument "cc"'),
    ],
)
def test_wrong_enqueue_fails_type_check(tmp_path: Path, body: str, expected: str) -> None:
    """mypy rejects an enqueue whose arguments do not match the job."""
    result = run_mypy(tmp_path, body)
    assert result.returncode == 1, result.stdout
    assert any(re.search(expected, line) for line in result.stdout.splitlines()), result.stdout


def test_right_enqueue_passes_type_check(tmp_path: Path) -> None:
    """mypy accepts enqueue and options calls that match the job."""
    body = 'await send_email.enqueue("a@b", retries=2)\n'
    body += 'await send_email.options(queue="mail").enqueue(to="a@b")'
    result = run_mypy(tmp_path, body)
    assert result.returncode == 0, result.stdout
