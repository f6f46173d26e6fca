"""Lease upkeep for durable providers: renewing this worker's leases, rescuing expired ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from obsjobs.errors import ProviderError
from obsjobs.protocols import JobRecord, QueueProvider

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """Two background tasks that keep leases right while a worker runs.

    One renews the leases of this worker's running jobs every third of the lease, so
    that after one failed renewal the next still comes before the lease expires. The
    other asks the provider every half lease to return jobs whose lease expired (their
    worker died) to the queue. The provider makes this safe when many workers do it at
    once. Both log and go on when the provider fails, because the next round may
    succeed.
    """

    def __init__(
        self,
        provider: QueueProvider,
        running: Callable[[], list[JobRecord]],
        lease_s: float,
        log: Any,
    ) -> None:
        self._provider = provider
        self._running = running
        self._lease_s = lease_s
        self._log = log
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start renewing and rescuing."""
        self._tasks = [
            asyncio.create_task(self._renew_leases(self._lease_s / 3), name="obsjobs-lease-renew"),
            asyncio.create_task(self._rescue_expired(self._lease_s / 2), name="obsjobs-rescue"),
        ]

    async def stop(self) -> None:
        """Cancel both tasks and wait for them to end."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _renew_leases(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            running = self._running()
            if not running:
                continue
            try:
                lost = await self._provider.renew(running)
            except ProviderError as error:
                self._log.error("lease.renew_failed", error=repr(error), jobs=len(running))
                continue
            for job_id in lost:
                self._log.warning("lease.lost", job_id=job_id)

    async def _rescue_expired(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                rescued = await self._provider.rescue()
            except ProviderError as error:
                self._log.error("lease.rescue_failed", error=repr(error))
                continue
            for job in rescued:
                self._log.warning(
                    "job.rescued",
                    job_id=job.job_id,
                    job=job.name,
                    queue=job.queue,
                    attempt=job.attempt,
                    dead=job.dead,
                )
