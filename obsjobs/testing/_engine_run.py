"""Run an engine until a condition holds, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from obsjobs.engine import Engine, EngineStatus

__all__ = ["run_engine_until"]


async def run_engine_until(
    engine: Engine[Any],
    condition: asyncio.Event | Callable[[], bool],
    timeout_s: float,
    *,
    poll_interval_s: float = 0.01,
) -> None:
    """Start ``engine`` unless it runs already, wait for ``condition``, then stop it.

    ``condition`` is an event to wait for, or a predicate checked every
    ``poll_interval_s``. The engine is stopped on every path, with its own shutdown grace.

    Raises:
        TimeoutError: ``condition`` did not hold within ``timeout_s``; the engine has
            been stopped when it is raised.
        ValueError: ``timeout_s`` or ``poll_interval_s`` is not positive.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive seconds, got {timeout_s!r}")
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s must be positive seconds, got {poll_interval_s!r}")
    if engine.status is EngineStatus.CREATED:
        await engine.start()
    try:
        await asyncio.wait_for(_hold(condition, poll_interval_s), timeout_s)
    except TimeoutError as error:
        raise TimeoutError(
            f"condition not met within {timeout_s:g}s, and the engine was stopped"
        ) from error
    finally:
        await engine.stop()


async def _hold(condition: asyncio.Event | Callable[[], bool], poll_interval_s: float) -> None:
    if isinstance(condition, asyncio.Event):
        await condition.wait()
        return
    # A plain predicate gives nothing to await, so it is polled.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(poll_interval_s)
