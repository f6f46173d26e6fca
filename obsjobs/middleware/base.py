"""The base class for provider middleware, and :func:`compose`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from obsjobs.errors import ConfigurationError
from obsjobs.protocols import (
    DeadJob,
    EnqueueResult,
    JobRecord,
    JobResult,
    NewJob,
    ProviderMiddleware,
    QueueProvider,
    QueueStats,
    RescuedJob,
)

__all__ = ["Middleware", "compose", "iter_chain"]


class Middleware:
    """A provider that passes every call to the provider it wraps.

    Subclasses override the calls they care about and call ``self.inner`` for the rest.
    An override must let ``asyncio.CancelledError`` propagate and must release anything
    it holds (a permit, a counter) on every path, because the engine calls ``finish``
    exactly once per claimed job, including after a cancellation.
    """

    _inner: QueueProvider | None = None

    def wrap(self, inner: QueueProvider) -> QueueProvider:
        """Wrap ``inner`` and return ``self``; a middleware wraps one provider only."""
        if self._inner is not None:
            raise ConfigurationError(
                f"{type(self).__name__} already wraps a provider; create one instance per chain"
            )
        self._inner = inner
        return self

    @property
    def inner(self) -> QueueProvider:
        """The wrapped provider."""
        if self._inner is None:
            raise ConfigurationError(
                f"{type(self).__name__} wraps no provider yet; pass it to obsjobs.compose()"
            )
        return self._inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def durable(self) -> bool:
        return self.inner.durable

    @property
    def lease_s(self) -> float | None:
        return self.inner.lease_s

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        return await self.inner.enqueue(jobs)

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str) -> list[JobRecord]:
        return await self.inner.claim(queues, limit, worker_id=worker_id)

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        await self.inner.wait(queues, timeout_s)

    async def finish(self, job: JobRecord, result: JobResult) -> None:
        await self.inner.finish(job, result)

    async def renew(self, jobs: Sequence[JobRecord]) -> list[str]:
        return await self.inner.renew(jobs)

    async def rescue(self) -> list[RescuedJob]:
        return await self.inner.rescue()

    async def stats(self) -> list[QueueStats]:
        return await self.inner.stats()

    async def last_tick(self, schedule: str) -> datetime | None:
        return await self.inner.last_tick(schedule)

    async def dead_jobs(self, queue: str | None = None, limit: int = 100) -> list[DeadJob]:
        return await self.inner.dead_jobs(queue, limit)

    async def requeue(self, job_ids: Sequence[str]) -> int:
        return await self.inner.requeue(job_ids)


def compose(provider: QueueProvider, *middleware: ProviderMiddleware) -> QueueProvider:
    """Wrap ``provider`` in ``middleware``, the first one outermost.

    ``compose(queue, Metrics(), ConcurrencyLimit(global_limit=8))`` returns a provider on
    which every call goes through ``Metrics`` first, then ``ConcurrencyLimit``, then the
    queue; results come back in the opposite order. Putting ``Metrics`` first means it
    also counts what the inner middleware does.
    """
    wrapped = provider
    for layer in reversed(middleware):
        wrapped = layer.wrap(wrapped)
    return wrapped


def iter_chain(provider: QueueProvider) -> Iterator[object]:
    """Yield ``provider`` and every provider it wraps, outermost first."""
    current: object = provider
    while True:
        yield current
        if not isinstance(current, Middleware) or current._inner is None:
            return
        current = current._inner
