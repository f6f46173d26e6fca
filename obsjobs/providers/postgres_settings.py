"""Settings of the PostgreSQL provider, with their defaults and checks.

This module does not import psycopg, so the defaults can be read without the extra.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_POOL_MAX_SIZE",
    "DEFAULT_POOL_MIN_SIZE",
    "DEFAULT_RETENTION",
    "DEFAULT_SCHEMA",
    "Settings",
]

DEFAULT_SCHEMA: Final = "obsjobs"
DEFAULT_LEASE_S: Final = 30.0
DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024
"""1 MiB: the largest job accepted, counting its arguments and headers as UTF-8 JSON."""
DEFAULT_POLL_INTERVAL_S: Final = 5.0
"""The maximum time a waiting worker goes without claiming, in case a wake-up was lost."""
DEFAULT_RETENTION: Final = timedelta(days=7)
"""How long succeeded jobs are kept before pruning deletes them."""
DEFAULT_POOL_MIN_SIZE: Final = 2
DEFAULT_POOL_MAX_SIZE: Final = 10
DEFAULT_CONNECT_TIMEOUT_S: Final = 10.0


def _positive_seconds(parameter: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{parameter} must be a positive number of seconds, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{parameter} must be finite, got {value!r}")
    return float(value)


def _int_at_least(parameter: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{parameter} must be an int of at least {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Checked settings of one :class:`~obsjobs.providers.postgres.PostgresQueue`.

    Build it with :meth:`check`, which raises ``TypeError`` or ``ValueError`` naming
    the parameter; the schema name is checked by the statements module.
    """

    conninfo: str
    schema: str
    lease_s: float
    max_payload_bytes: int
    pool_min_size: int
    pool_max_size: int
    poll_interval_s: float
    retention_s: float
    application_name: str
    connect_timeout_s: float

    @classmethod
    def check(
        cls,
        conninfo: str,
        *,
        schema: str,
        lease_s: float,
        max_payload_bytes: int,
        pool_min_size: int,
        pool_max_size: int,
        poll_interval_s: float,
        retention: timedelta,
        application_name: str | None,
        connect_timeout_s: float,
    ) -> Settings:
        """Return the settings if every value is usable, else raise naming the parameter."""
        if not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str, got {type(conninfo).__name__}")
        if not isinstance(retention, timedelta) or retention <= timedelta(0):
            raise ValueError(f"retention must be a positive timedelta, got {retention!r}")
        if application_name is not None and not isinstance(application_name, str):
            raise TypeError(
                f"application_name must be a str, got {type(application_name).__name__}"
            )
        min_size = _int_at_least("pool_min_size", pool_min_size, 0)
        return cls(
            conninfo=conninfo,
            schema=schema,
            lease_s=_positive_seconds("lease_s", lease_s),
            max_payload_bytes=_int_at_least("max_payload_bytes", max_payload_bytes, 1),
            pool_min_size=min_size,
            pool_max_size=_int_at_least("pool_max_size", pool_max_size, max(min_size, 1)),
            poll_interval_s=_positive_seconds("poll_interval_s", poll_interval_s),
            retention_s=retention.total_seconds(),
            application_name=application_name or f"obsjobs-{os.getpid()}",
            connect_timeout_s=_positive_seconds("connect_timeout_s", connect_timeout_s),
        )
