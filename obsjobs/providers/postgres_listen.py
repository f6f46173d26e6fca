"""Wake-ups for idle workers: a LISTEN connection and the waiters it wakes.

Every statement that makes a job claimable (enqueue, retry, give-back, rescue, requeue)
runs ``pg_notify(channel, queue)`` in its own transaction, so the notification is
delivered when, and only when, the change commits. The payload is the queue name only.

:class:`Listener` keeps one dedicated connection listening, outside the pool, and
reconnects with exponential backoff when it breaks. :class:`WakeBoard` turns each
notification into a wake-up of the waiters of that queue, and counts notifications per
queue so that a notification that arrives between a claim and the following wait is not
lost (see :meth:`WakeBoard.mark`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import psycopg
import structlog
from psycopg import sql

from obsjobs.providers.postgres_errors import translate_errors

__all__ = ["Listener", "WakeBoard", "wait_timeout"]

_log = structlog.get_logger("obsjobs.postgres")

RECONNECT_BACKOFF_MIN_S: Final = 0.1
RECONNECT_BACKOFF_MAX_S: Final = 10.0
LISTENER_DOWN_POLL_S: Final = 1.0
"""How often waiters claim anyway while the LISTEN connection is reconnecting."""
DUE_RECHECK_S: Final = 0.01
"""How long to wait when a job is due but the claim missed it (another claim held its
row lock), instead of claiming again in a tight loop."""
DUE_MARGIN_S: Final = 0.001
"""Added to a due time, so the claim that follows finds the job due on the server."""
PING_INTERVAL_S: Final = 30.0
"""Idle time after which the listener checks its connection with a query, so a silently
dropped connection is noticed (and replaced) within about this long."""

Mark = tuple[int, ...]
"""Notification counts of some queues (plus the reconnect count) at one moment."""


def wait_timeout(
    timeout_s: float, poll_interval_s: float, listening: bool, due_in_s: float | None
) -> float:
    """Return how long a wait may sleep without a notification.

    At most ``timeout_s`` and ``poll_interval_s``, at most ``LISTENER_DOWN_POLL_S``
    while not ``listening``, and until the earliest waiting job is due (``due_in_s``
    seconds from now, ``None`` when no job waits).
    """
    timeout = min(timeout_s, poll_interval_s)
    if not listening:
        timeout = min(timeout, LISTENER_DOWN_POLL_S)
    if due_in_s is not None:
        timeout = min(timeout, max(due_in_s + DUE_MARGIN_S, DUE_RECHECK_S))
    return timeout


@dataclass(eq=False, slots=True)
class _Waiter:
    queues: frozenset[str]
    future: asyncio.Future[None] = field(repr=False)


class WakeBoard:
    """Notification counts per queue, and the futures of tasks waiting for one."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._epoch = 0
        self._waiters: list[_Waiter] = []

    def mark(self, queues: Sequence[str]) -> Mark:
        """Return the notification counts of ``queues`` now.

        A claim takes a mark before it queries. The wait that follows an empty claim
        returns at once if :meth:`changed` returns true for that mark.
        """
        return (self._epoch, *(self._counts.get(queue, 0) for queue in queues))

    def changed(self, mark: Mark, queues: Sequence[str]) -> bool:
        """Return whether a notification for ``queues`` (or a reconnect) came after ``mark``."""
        return mark != self.mark(queues)

    def notify(self, queue: str) -> None:
        """Record a notification for ``queue`` and wake its waiters."""
        self._counts[queue] = self._counts.get(queue, 0) + 1
        for waiter in self._waiters:
            if queue in waiter.queues and not waiter.future.done():
                waiter.future.set_result(None)

    def notify_all(self) -> None:
        """Wake every waiter: notifications may have been missed (reconnect, close)."""
        self._epoch += 1
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return on a notification for one of ``queues``, or after ``timeout_s``."""
        if timeout_s <= 0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(frozenset(queues), future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            self._waiters.remove(waiter)


class Listener:
    """One LISTEN connection kept open, feeding notifications to a :class:`WakeBoard`.

    :meth:`start` connects and listens before it returns, so no notification sent after
    it is missed. When the connection breaks, the listener reconnects with exponential
    backoff (0.1 s doubling to 10 s, with jitter). It then wakes every waiter, because
    notifications sent while it was away are lost, and each waiter claims once.
    """

    def __init__(
        self,
        conninfo: str,
        listen_statement: sql.Composed,
        board: WakeBoard,
        *,
        application_name: str,
        connect_timeout_s: float,
    ) -> None:
        self._conninfo = conninfo
        self._listen = listen_statement
        self._board = board
        self._application_name = application_name
        self._connect_timeout_s = connect_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._connected = False

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up; while it is down, waiters poll faster."""
        return self._connected

    async def start(self) -> None:
        """Connect and LISTEN, then keep listening in a background task.

        Raises:
            ProviderUnavailableError: the first connection failed.
        """
        with translate_errors("open the LISTEN connection"):
            connection = await self._connect()
        self._task = asyncio.create_task(self._run(connection), name="obsjobs-postgres-listen")

    async def stop(self) -> None:
        """Stop listening and close the connection; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._connected = False

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        connection = await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            application_name=self._application_name,
            connect_timeout=max(1, round(self._connect_timeout_s)),
        )
        try:
            await connection.execute(self._listen)
        except BaseException:
            await connection.close()
            raise
        self._connected = True
        return connection

    async def _run(self, first: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        try:
            await self._listen_forever(first)
        finally:
            # Whatever ends this task, waiters must fall back to polling.
            self._connected = False

    async def _listen_forever(self, first: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        connection: psycopg.AsyncConnection[tuple[object, ...]] | None = first
        failures = 0
        while True:
            try:
                if connection is None:
                    connection = await self._connect()
                    failures = 0
                    _log.info("postgres.listen_restored", application_name=self._application_name)
                    self._board.notify_all()
                async with connection:
                    await self._listen_on(connection)
            except psycopg.Error as error:
                failures += 1
                delay = min(RECONNECT_BACKOFF_MIN_S * 2 ** (failures - 1), RECONNECT_BACKOFF_MAX_S)
                delay *= random.uniform(0.5, 1.0)
                _log.warning(
                    "postgres.listen_lost",
                    application_name=self._application_name,
                    error=repr(error),
                    attempt=failures,
                    retry_in_s=round(delay, 3),
                )
                self._connected = False
                connection = None
                await asyncio.sleep(delay)

    async def _listen_on(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        while True:
            received = False
            async for notify in connection.notifies(timeout=PING_INTERVAL_S):
                received = True
                self._board.notify(notify.payload)
            if not received:
                await connection.execute("SELECT 1")
