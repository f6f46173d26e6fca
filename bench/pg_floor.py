"""The floor of the PostgreSQL benchmark: claim and complete rows with bare psycopg 3.

No engine, no job bodies, no payloads: one connection in autocommit mode runs a claim
statement for up to :data:`CLAIM_BATCH` rows and one statement that completes them,
until no waiting row is left. Each statement commits on its own, with the server's
default ``synchronous_commit``, like the libraries' statements.
"""

from __future__ import annotations

from typing import Final

import psycopg
from pg_common import Stopwatch, ThroughputRun, check_count, fetch_value, scratch_schema

CLAIM_BATCH: Final = 100

_CREATE = """
CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    state text NOT NULL DEFAULT 'waiting',
    payload jsonb NOT NULL DEFAULT '{}'
)
"""
_SEED = "INSERT INTO jobs (payload) SELECT '{}' FROM generate_series(1, %(jobs)s)"
_CLAIM = """
UPDATE jobs SET state = 'running'
WHERE id IN (
    SELECT id FROM jobs WHERE state = 'waiting' ORDER BY id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
_COMPLETE = "UPDATE jobs SET state = 'done' WHERE id = ANY(%(ids)s)"


async def floor_throughput(conninfo: str, jobs: int) -> ThroughputRun:
    """Seed ``jobs`` rows in one INSERT, then claim and complete them, timing both phases.

    The table has only its primary key, which the claim walks in order, and is analyzed
    after seeding like the libraries' tables. Completion is
    the statement itself, so the returned ``ack_lag_s`` is zero.
    """
    async with scratch_schema(conninfo, "floor") as scratch:
        async with await psycopg.AsyncConnection.connect(
            scratch.conninfo, autocommit=True
        ) as connection:
            await connection.execute(_CREATE)
            watch = Stopwatch()
            await connection.execute(_SEED, {"jobs": jobs})
            seeded = watch.timing(jobs)
            await connection.execute("ANALYZE jobs")

            watch.start()
            done = 0
            while True:
                cursor = await connection.execute(_CLAIM, {"limit": CLAIM_BATCH})
                ids = [row[0] for row in await cursor.fetchall()]
                if not ids:
                    break
                await connection.execute(_COMPLETE, {"ids": ids})
                done += len(ids)
            drained = watch.timing(jobs)
        check_count("floor completed rows", jobs, done)
        remaining = await fetch_value(
            scratch.conninfo, "SELECT count(*) FROM jobs WHERE state <> 'done'"
        )
        check_count("floor rows not done", 0, remaining)
    return ThroughputRun(seeded, drained, 0.0)
