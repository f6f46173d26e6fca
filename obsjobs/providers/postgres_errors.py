"""Translation of psycopg exceptions into obsjobs provider errors.

No psycopg exception leaves the PostgreSQL provider: each is raised again as
:class:`~obsjobs.errors.ProviderUnavailableError` (the server cannot be reached or the
connection broke, so retrying later may work) or :class:`~obsjobs.errors.ProviderError`
(anything else), with the driver exception chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psycopg

from obsjobs.errors import ProviderError, ProviderUnavailableError

__all__ = ["PROVIDER_NAME", "is_connection_error", "translate_errors"]

PROVIDER_NAME: Final = "postgres"


def is_connection_error(error: BaseException) -> bool:
    """Return whether ``error`` means the server or the connection is unusable right now.

    Operational errors cover refused and broken connections, a server shutting down or
    terminating the backend, and the pool's timeouts (``PoolTimeout``, ``PoolClosed``
    and ``TooManyRequests`` derive from ``OperationalError``). Interface errors are
    raised on a connection that is already closed.
    """
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Raise psycopg errors from the block as obsjobs provider errors about ``action``.

    ``action`` completes the sentence "PostgreSQL failed to ...", for example
    ``"claim jobs"``. ``asyncio.CancelledError`` and obsjobs errors pass unchanged.
    """
    try:
        yield
    except psycopg.Error as error:
        if is_connection_error(error):
            raise ProviderUnavailableError(
                f"PostgreSQL is unavailable, failed to {action}: {error}", provider=PROVIDER_NAME
            ) from error
        raise ProviderError(
            f"PostgreSQL failed to {action}: {error}", provider=PROVIDER_NAME
        ) from error
