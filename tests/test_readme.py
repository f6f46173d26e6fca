"""Runs the README's tour, so the documented code keeps working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
TIMEOUT_S = 60


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_one_tour() -> None:
    """The README carries exactly one Python tour block."""
    assert len(python_blocks(README.read_text())) == 1


def test_readme_tour_runs(tmp_path: Path) -> None:
    """The tour runs to completion and prints what its jobs print."""
    script = tmp_path / "tour.py"
    script.write_text(python_blocks(README.read_text())[0])
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "hello Ada x2 (attempt 1)" in completed.stdout
    assert "hello Grace x1 (attempt 1)" in completed.stdout
