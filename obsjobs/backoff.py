"""Backoff strategies: how long to wait after a failed attempt before the next one."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from numbers import Real
from typing import Literal, Protocol, final, get_args, runtime_checkable

from obsjobs.errors import MIN_RETRY_DELAY_SECONDS

__all__ = ["Backoff", "ExponentialBackoff", "FixedBackoff", "Jitter", "check_attempt"]

Jitter = Literal["full", "equal", "none"]
"""Jitter mode of :class:`ExponentialBackoff`, which documents each mode."""


@runtime_checkable
class Backoff(Protocol):
    """A delay strategy: any callable that maps a failed attempt number to seconds.

    ``attempt`` is the 1-based number of the attempt that just failed. The result is
    the number of seconds to wait before the next attempt. It must be finite and
    zero or positive. :meth:`RetryPolicy.delay_for` raises delays below
    :data:`~obsjobs.errors.MIN_RETRY_DELAY_SECONDS` to that minimum. A plain function
    or lambda satisfies this protocol.
    """

    def __call__(self, attempt: int) -> float:
        """Return the seconds to wait after failed attempt number ``attempt``."""
        ...


@final
@dataclass(frozen=True)
class ExponentialBackoff:
    """Exponential backoff: ``base_seconds * factor ** (attempt - 1)``, capped, with jitter.

    Jitter spreads the retries of many clients that failed at the same moment. With
    ``d`` the capped delay:

    - ``"full"``: a uniform draw from ``[0, d]``, raised to at least
      :data:`~obsjobs.errors.MIN_RETRY_DELAY_SECONDS`. That floor wins over
      ``max_seconds`` when ``max_seconds`` is below it.
    - ``"equal"``: ``d / 2`` plus a uniform draw from ``[0, d / 2]``.
    - ``"none"``: exactly ``d``.

    Pass ``rng`` (a seeded ``random.Random``) for reproducible delays. Without it,
    draws come from the ``random`` module's shared generator. ``rng`` takes no part
    in equality or hashing.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a seconds field is negative or not finite, ``factor`` is below 1
            or not finite, or ``jitter`` is not one of the three modes.
    """

    base_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 300.0
    jitter: Jitter = "full"
    rng: random.Random | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        """Validate every field and raise naming the first invalid one."""
        check_seconds("base_seconds", self.base_seconds)
        factor = real_value("factor", self.factor)
        if not (math.isfinite(factor) and factor >= 1):
            raise ValueError(f"factor must be finite and >= 1, got {self.factor!r}")
        check_seconds("max_seconds", self.max_seconds)
        if self.jitter not in get_args(Jitter):
            raise ValueError(f"jitter must be 'full', 'equal' or 'none', got {self.jitter!r}")
        if self.rng is not None and not isinstance(self.rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {type(self.rng).__name__}")

    def __call__(self, attempt: int) -> float:
        """Return the jittered delay in seconds after failed attempt number ``attempt``."""
        check_attempt(attempt)
        capped = self._capped_delay(attempt)

        if self.jitter == "none":
            return capped
        if self.jitter == "equal":
            half = capped / 2
            return min(half + self._uniform(half), capped)
        return max(min(self._uniform(capped), capped), MIN_RETRY_DELAY_SECONDS)

    def _capped_delay(self, attempt: int) -> float:
        if self.base_seconds == 0:
            return 0.0
        try:
            # float() first, because an int factor would build a huge exact integer.
            delay = self.base_seconds * float(self.factor) ** (attempt - 1)
        except OverflowError:
            # A float power past about 1.8e308 raises instead of returning inf.
            return float(self.max_seconds)
        return float(min(delay, self.max_seconds))

    def _uniform(self, high: float) -> float:
        if self.rng is None:
            return random.uniform(0.0, high)
        return self.rng.uniform(0.0, high)


@final
@dataclass(frozen=True)
class FixedBackoff:
    """The same delay, ``seconds``, after every failed attempt.

    Raises:
        TypeError: ``seconds`` is not a number.
        ValueError: ``seconds`` is negative or not finite.
    """

    seconds: float

    def __post_init__(self) -> None:
        """Validate ``seconds``."""
        check_seconds("seconds", self.seconds)

    def __call__(self, attempt: int) -> float:
        """Return ``seconds`` whatever the attempt number."""
        check_attempt(attempt)
        return float(self.seconds)


def check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1 (attempts count from 1), got {attempt}")


def real_value(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def check_seconds(name: str, value: object) -> None:
    seconds = real_value(name, value)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
