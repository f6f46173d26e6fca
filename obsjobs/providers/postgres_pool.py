"""The PostgreSQL provider's connection pool and its statement runner."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from obsjobs.errors import ProviderUnavailableError
from obsjobs.providers import postgres_migrations
from obsjobs.providers.postgres_errors import PROVIDER_NAME, is_connection_error, translate_errors
from obsjobs.providers.postgres_settings import Settings

__all__ = ["IDLE_CHECK_S", "Pool"]

IDLE_CHECK_S: Final = 1.0
"""A pooled connection idle for longer than this is checked with an empty query before
use, so that one the server closed meanwhile is replaced instead of failing a call.
Connections reused sooner skip the check, which would add a round trip to every call."""

_log = structlog.get_logger("obsjobs.postgres")

Rows = list[tuple[Any, ...]]


async def _configure(connection: psycopg.AsyncConnection[Any]) -> None:
    # The provider's statements are short and run often. When a large backlog pushes a
    # plan's estimated cost past jit_above_cost, JIT compilation would add tens to
    # hundreds of milliseconds to each run and never pay back.
    await connection.execute("SET jit = off")


class Pool:
    """An autocommit connection pool that runs statements and translates driver errors.

    Every connection carries the settings' ``application_name``, so operators (and
    tests) can find the provider's sessions in ``pg_stat_activity``. Connections the
    server closed are replaced by the pool in the background.
    """

    def __init__(self, settings: Settings) -> None:
        self._schema = settings.schema
        self._timeout_s = settings.connect_timeout_s
        self._returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.conninfo,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            open=False,
            name=f"obsjobs-{settings.schema}",
            kwargs={"autocommit": True, "application_name": settings.application_name},
            configure=_configure,
            check=self._check,
            reset=self._returned,
            timeout=settings.connect_timeout_s,
        )

    async def open(self) -> None:
        """Open the pool and check the schema version on one of its connections.

        Raises:
            ConfigurationError: the schema is missing, behind or ahead of this obsjobs.
            ProviderUnavailableError: no connection within the timeout.
        """
        try:
            with translate_errors("open the connection pool"):
                await self._pool.open(wait=True, timeout=self._timeout_s)
                async with self._pool.connection() as connection:
                    await postgres_migrations.check_version(connection, self._schema)
        except BaseException:
            await self._pool.close()
            raise

    async def close(self) -> None:
        """Close every connection; idempotent."""
        await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Lend a connection for several statements; the caller translates errors."""
        async with self._pool.connection() as connection:
            yield connection

    async def fetch(self, action: str, query: sql.Composed, params: dict[str, Any]) -> Rows:
        """Run one autocommit statement and return its rows.

        A statement whose connection broke runs once more, after the pool has replaced
        its broken idle connections. Enqueues never come this way, because a repeat
        could add a job twice. For the other statements a repeat loses nothing even when
        the first run committed and only its reply was lost: a repeated claim leaves
        the first claim's rows to be rescued when their lease expires, and a repeated
        result or requeue finds nothing left to change (a result then raises
        ``LeaseLostError``).

        Raises:
            ProviderUnavailableError: the server cannot be reached or the pool is closed.
            ProviderError: the statement failed.
        """
        if self._pool.closed:
            raise ProviderUnavailableError(
                "PostgresQueue is not open: call open() first (the engine does this on start)",
                provider=PROVIDER_NAME,
            )
        with translate_errors(action):
            try:
                return await self._fetch_once(query, params)
            except psycopg.Error as error:
                if not is_connection_error(error) or isinstance(error, PoolTimeout):
                    raise
                _log.warning("postgres.retrying", action=action, error=repr(error))
            # The server may have closed every idle connection at once (a restart, an
            # operator's pg_terminate_backend): replace the broken ones before retrying.
            await self._pool.check()
            return await self._fetch_once(query, params)

    async def _fetch_once(self, query: sql.Composed, params: dict[str, Any]) -> Rows:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(query, params)
            rows: Rows = await cursor.fetchall()
            return rows

    async def _check(self, connection: psycopg.AsyncConnection[Any]) -> None:
        returned = self._returned_at.get(connection)
        if returned is None or time.monotonic() - returned > IDLE_CHECK_S:
            await AsyncConnectionPool.check_connection(connection)

    async def _returned(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._returned_at[connection] = time.monotonic()
