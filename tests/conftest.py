"""Shared fixtures: a local tracer provider with an in-memory exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

if TYPE_CHECKING:
    import psycopg

POSTGRES_CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
async def db(schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection with the test's PostgreSQL schema on the search path.

    For the integration tests, whose modules define the ``schema`` fixture. psycopg is
    imported here, not at the top, so the other tests run without the postgres extra.
    """
    import psycopg
    from psycopg import sql

    connection = await psycopg.AsyncConnection.connect(POSTGRES_CONNINFO, autocommit=True)
    await connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    yield connection
    await connection.close()
