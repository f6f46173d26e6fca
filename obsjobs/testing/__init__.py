"""Test support for obsjobs users and provider authors.

- :class:`ProviderContract`: the provider contract suite, a pytest class to subclass.
- :class:`MemoryQueue` and :class:`ManualClock`, re-exported for users' own tests.
- :func:`run_engine_until`: start an engine, wait for a condition, stop the engine.

This module imports pytest when it is imported, so import it only from test code.
pytest and pytest-asyncio come with the ``dev`` extra. The suite's tests are
``async def`` methods and carry the asyncio mark. Under pytest-asyncio's strict mode,
decorate the ``provider`` fixture with ``pytest_asyncio.fixture``; under
``asyncio_mode = "auto"``, ``pytest.fixture`` is enough.
"""

from __future__ import annotations

from obsjobs.clock import ManualClock
from obsjobs.providers.memory import MemoryQueue
from obsjobs.testing._claim_contract import ClaimContract
from obsjobs.testing._engine_run import run_engine_until
from obsjobs.testing._finish_contract import FinishContract
from obsjobs.testing._lease_contract import LeaseContract

__all__ = ["ManualClock", "MemoryQueue", "ProviderContract", "run_engine_until"]


class ProviderContract(ClaimContract, FinishContract, LeaseContract):
    """The behaviour every :class:`obsjobs.QueueProvider` must have, as pytest tests.

    Subclass it in a test module (the class name must start with ``Test``) and define
    a ``provider`` fixture that yields an opened provider and closes it afterwards::

        class TestMyQueue(ProviderContract):
            durable = True
            lease_s_for_tests = 0.5

            @pytest.fixture
            async def provider(self) -> AsyncIterator[QueueProvider]:
                queue = MyQueue(DSN, lease_s=self.lease_s_for_tests)
                await queue.open()
                yield queue
                await queue.close()

            async def sibling(self, provider: QueueProvider) -> QueueProvider:
                return MyQueue(DSN, lease_s=self.lease_s_for_tests)

    Every test works in queues, unique keys and schedules with fresh random names, so
    the fixture need not empty the storage between tests. Tests for guarantees the
    provider does not make are skipped with a reason that names the guarantee.

    Hooks a subclass may set or override:

    - ``durable``: true for an at-least-once provider. It must equal ``provider.durable``.
    - ``lease_s_for_tests``: the lease, in seconds, that the fixture must give a provider
      with leases. The lease tests wait up to three leases in real time, so keep it
      short, but well above a round trip to the backend (0.5 s by default).
    - ``delay_s``: how far ahead some tests schedule a job that they later see fall
      due. On the real clock such a test waits this long, and it fails with a request
      to raise ``delay_s`` when an enqueue or claim alone takes longer.
    - ``liveness_s``: the longest wait for something that must happen promptly (a
      wake-up, jobs run by engines). It bounds a hang and is never a timing measurement.
    - :meth:`sibling`: a provider on the same storage for one more engine.
    - :meth:`clock_now` and :meth:`advance_clock`: the provider's clock, for providers
      that can be driven by a test clock (as :class:`MemoryQueue` can).
    """
