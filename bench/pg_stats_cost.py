"""Measure the cost of PostgresQueue.stats() on a large jobs table.

Fills a scratch schema with 1,000,000 succeeded jobs, the history that stats() must not
read, and 100,000 waiting jobs over four queues (90% due, 10% scheduled in the future).
Runs VACUUM ANALYZE, as autovacuum eventually would. Then times the stats query twice:
as server execution time from EXPLAIN ANALYZE, and end to end through
``PostgresQueue.stats()``. Prints the medians and the plan's top nodes, and drops the
schema afterwards unless ``--keep`` is given.

Usage::

    /work/venv/bin/python bench/pg_stats_cost.py [--conninfo "host=127.0.0.1 ..."] [--runs 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from obsjobs.providers.postgres import PostgresQueue, migrate

DEFAULT_CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=postgres"
SUCCEEDED_ROWS = 1_000_000
WAITING_ROWS = 100_000

FILL_SUCCEEDED = """
INSERT INTO jobs (queue, name, args, kwargs, headers, state, attempt, enqueued_at,
                  available_at, claimed_at, finished_at)
SELECT 'queue-' || (g %% 4), 'bench.job', '[1]', '{}', '{}', 'succeeded', 1,
       now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
       now() - interval '1 day' + g * interval '1 ms'
FROM generate_series(1, %(rows)s) AS g
"""

FILL_WAITING = """
INSERT INTO jobs (queue, name, args, kwargs, headers, available_at)
SELECT 'queue-' || (g %% 4), 'bench.job', '[1]', '{}', '{}',
       CASE WHEN g %% 10 = 0 THEN now() + interval '1 hour' ELSE now() - g * interval '1 ms' END
FROM generate_series(1, %(rows)s) AS g
"""


async def fill(conninfo: str, schema: str) -> None:
    """Create the schema and insert the benchmark rows."""
    await migrate(conninfo, schema)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        started = time.perf_counter()
        await connection.execute(FILL_SUCCEEDED, {"rows": SUCCEEDED_ROWS})
        await connection.execute(FILL_WAITING, {"rows": WAITING_ROWS})
        await connection.execute("VACUUM ANALYZE jobs")
        print(f"filled in {time.perf_counter() - started:.1f} s")


def top_nodes(plan: dict[str, Any], depth: int = 0) -> list[str]:
    """Return one line per plan node: type, index and actual rows."""
    line = "  " * depth + plan["Node Type"]
    if "Index Name" in plan:
        line += f" using {plan['Index Name']}"
    line += f" (rows={plan.get('Actual Rows')}, heap fetches={plan.get('Heap Fetches', '-')})"
    lines = [line]
    for child in plan.get("Plans", []):
        lines.extend(top_nodes(child, depth + 1))
    return lines


async def measure(conninfo: str, schema: str, runs: int) -> None:
    """Time the stats query ``runs`` times on the server and through the provider."""
    queue = PostgresQueue(conninfo, schema=schema)
    await queue.open()
    try:
        explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + queue._sql.stats
        server_ms: list[float] = []
        plan: dict[str, Any] = {}
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
            for _ in range(runs):
                cursor = await connection.execute(explain)
                row = await cursor.fetchone()
                assert row is not None
                result = row[0][0]
                server_ms.append(result["Execution Time"])
                plan = result["Plan"]
        client_ms: list[float] = []
        for _ in range(runs):
            started = time.perf_counter()
            stats = await queue.stats()
            client_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await queue.close()

    print(f"rows: {SUCCEEDED_ROWS:,} succeeded, {WAITING_ROWS:,} waiting; {runs} runs each")
    print(f"stats query, server execution time: median {statistics.median(server_ms):.1f} ms")
    print(f"PostgresQueue.stats(), end to end:   median {statistics.median(client_ms):.1f} ms")
    print("plan:")
    print("\n".join(top_nodes(plan)))
    print("result:", json.dumps([(s.queue, s.ready, s.scheduled) for s in stats]))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conninfo", default=DEFAULT_CONNINFO, help="libpq connection string")
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each kind")
    parser.add_argument("--keep", action="store_true", help="keep the scratch schema")
    args = parser.parse_args()
    schema = f"obsjobs_bench_{secrets.token_hex(4)}"
    try:
        await fill(args.conninfo, schema)
        await measure(args.conninfo, schema, args.runs)
    finally:
        if not args.keep:
            async with await psycopg.AsyncConnection.connect(args.conninfo, autocommit=True) as c:
                await c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    asyncio.run(main())
