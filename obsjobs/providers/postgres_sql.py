"""SQL statements of the PostgreSQL provider, composed once per schema.

Every statement is a :class:`psycopg.sql.SQL` template written as a literal string, with
the schema name inserted through :class:`psycopg.sql.Identifier` and every value sent as
a bound parameter. The schema name is also checked against :data:`SCHEMA_NAME_PATTERN`
before anything is composed, so it is safe twice over.

Job states stored in ``jobs.state``:

- ``waiting``: not claimed. It is *ready* when ``available_at <= now()`` and *scheduled*
  otherwise, so a delayed job needs no write to become claimable.
- ``running``: claimed; ``lease_token`` and ``lease_expires_at`` identify the claim.
- ``succeeded``: done; deleted after the retention period.
- ``dead``: failed for good; kept until requeued or deleted.

A result keeps the claim's ``lease_token`` (only a rescue clears it), so a renewal that
races with its own claim's result is not mistaken for a lost lease.
"""

from __future__ import annotations

import re
from typing import Final

from psycopg import sql

from obsjobs.errors import ConfigurationError

__all__ = ["SCHEMA_NAME_PATTERN", "Statements", "validate_schema"]

SCHEMA_NAME_PATTERN: Final = re.compile(r"[a-z_][a-z0-9_]{0,47}")
"""A schema name: a plain lower-case SQL identifier of at most 48 characters.

The limit leaves room for the suffix of the notification channel name inside
PostgreSQL's 63-byte identifier limit."""

_RECORD_COLUMNS: Final = sql.SQL(
    "j.id, j.name, j.queue, j.args, j.kwargs, j.headers, j.attempt, j.max_attempts,"
    " j.enqueued_at, j.available_at, j.priority, j.schedule, j.scheduled_time, j.lease_token"
)


def validate_schema(schema: str) -> str:
    """Return ``schema`` if it is a plain lower-case identifier, else raise.

    Raises:
        ConfigurationError: the name is not a ``str``, does not match
            :data:`SCHEMA_NAME_PATTERN`, or starts with ``pg_`` (reserved by PostgreSQL).
    """
    if not isinstance(schema, str) or not SCHEMA_NAME_PATTERN.fullmatch(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use 1 to 48 lower-case letters, digits and "
            "underscores, starting with a letter or underscore"
        )
    if schema.startswith("pg_"):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: names starting with 'pg_' are reserved by PostgreSQL"
        )
    return schema


class Statements:
    """Every statement the provider runs, bound to one schema.

    Attributes named for the operation hold the composed statement; parameters are
    named (``%(name)s``) and documented where a caller fills them.
    """

    def __init__(self, schema: str) -> None:
        self.schema = validate_schema(schema)
        self.channel = f"{schema}_wakeup"
        """The LISTEN/NOTIFY channel; notification payloads carry only a queue name."""
        self.sequence = f'"{schema}"."jobs_id_seq"'
        """The job id sequence as ``regclass`` text (the name is validated, so quoting is safe)."""

        names = {
            "jobs": sql.Identifier(schema, "jobs"),
            "schedules": sql.Identifier(schema, "schedules"),
            "versions": sql.Identifier(schema, "schema_version"),
            "record": _RECORD_COLUMNS,
        }

        def compose(template: sql.SQL, **extra: sql.Composable) -> sql.Composed:
            return template.format(**names, **extra)

        self.listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
        self.version = compose(sql.SQL("SELECT coalesce(max(version), 0) FROM {versions}"))
        self.enqueue = compose(_ENQUEUE)
        self.claim_tick = compose(_CLAIM_TICK)
        self.claim_one_queue = compose(_CLAIM, queue_match=sql.SQL("queue = %(queue)s"))
        self.claim_many_queues = compose(
            _CLAIM, queue_match=sql.SQL("queue = ANY(%(queues)s::text[])")
        )
        self.seconds_until_due = compose(_SECONDS_UNTIL_DUE)
        self.renew = compose(_RENEW)
        self.succeed = compose(_SUCCEED)
        self.retry = compose(_RETRY)
        self.bury = compose(_BURY)
        self.give_back = compose(_GIVE_BACK)
        self.rescue = compose(_RESCUE)
        self.prune = compose(_PRUNE)
        self.stats = compose(_STATS)
        self.last_tick = compose(sql.SQL("SELECT last_tick FROM {schedules} WHERE name = %(name)s"))
        self.dead_jobs_all = compose(_DEAD_JOBS, queue_match=sql.SQL("true"))
        self.dead_jobs_in_queue = compose(_DEAD_JOBS, queue_match=sql.SQL("queue = %(queue)s"))
        self.requeue = compose(_REQUEUE)


# Insert a batch, with per-row results in input order. Ids are drawn from the sequence
# before the insert, so each input row has its id and `created` is exact. A unique key
# already held by a waiting or running job makes ON CONFLICT skip the row; its id is then
# found among the rows this statement inserted (a duplicate key inside the batch) or
# among committed jobs. A conflicting job committed after this statement's snapshot is
# visible to neither lookup: such rows come back with a NULL id and the caller runs them
# again in a new statement.
_ENQUEUE: Final = sql.SQL(
    """
WITH input AS MATERIALIZED (
    SELECT nextval(%(sequence)s::regclass) AS id, u.*
    FROM unnest(
        %(queue)s::text[], %(name)s::text[], %(args)s::text[], %(kwargs)s::text[],
        %(headers)s::text[], %(priority)s::int[], %(max_attempts)s::int[],
        %(unique_key)s::text[], %(run_at)s::timestamptz[], %(schedule)s::text[],
        %(scheduled_time)s::timestamptz[]
    ) WITH ORDINALITY AS u(queue, name, args, kwargs, headers, priority, max_attempts,
                           unique_key, run_at, schedule, scheduled_time, ord)
),
inserted AS (
    INSERT INTO {jobs} AS j (id, queue, name, args, kwargs, headers, priority, max_attempts,
                             unique_key, schedule, scheduled_time, available_at)
    SELECT id, queue, name, args::json, kwargs::json, headers::json, priority, max_attempts,
           unique_key, schedule, scheduled_time, greatest(coalesce(run_at, now()), now())
    FROM input
    ORDER BY ord
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('waiting', 'running')
    DO NOTHING
    RETURNING j.id, j.queue, j.unique_key
),
woken AS (
    SELECT count(pg_notify(%(channel)s, q.queue)) AS notified
    FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT input.ord,
       coalesce(inserted.id, in_batch.id, committed.id) AS id,
       inserted.id IS NOT NULL AS created
FROM input
CROSS JOIN woken
LEFT JOIN inserted ON inserted.id = input.id
LEFT JOIN (
    SELECT unique_key, min(id) AS id FROM inserted
    WHERE unique_key IS NOT NULL
    GROUP BY unique_key
) AS in_batch ON inserted.id IS NULL AND in_batch.unique_key = input.unique_key
LEFT JOIN {jobs} AS committed
    ON inserted.id IS NULL AND committed.unique_key = input.unique_key
   AND committed.state IN ('waiting', 'running')
ORDER BY input.ord
"""
)

# Take a schedule tick: it succeeds only for a tick later than the stored last tick, so
# each (schedule, scheduled_time) is taken once however many schedulers race for it.
# A concurrent taker of the same tick blocks on the row until the first commits, then
# reads the new last_tick and returns no row.
_CLAIM_TICK: Final = sql.SQL(
    """
INSERT INTO {schedules} AS s (name, last_tick) VALUES (%(schedule)s, %(scheduled_time)s)
ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick, updated_at = now()
WHERE s.last_tick < excluded.last_tick
RETURNING s.name
"""
)

# Claims, renewals and rescues commit asynchronously (synchronous_commit is off for
# their own transaction only), so they return without waiting for the WAL flush: about
# 3 ms per flush on the development machine's disk, measured with pg_test_fsync. A
# server crash can lose the most recent such commits (PostgreSQL manual, "Asynchronous
# Commit"). That is safe: a lost claim or rescue leaves the job to be claimed or rescued
# again, and a lost renewal only shortens a lease. Enqueues and results stay synchronous,
# because callers rely on them.
#
# Claim in one statement. The MATERIALIZED CTE runs the locking SELECT exactly once.
# LIMIT sits above LockRows, so only the rows returned are locked, whatever the plan.
# The ORDER BY matches jobs_claim_idx (queue, priority DESC, available_at, id) WHERE
# state = 'waiting', so for one queue and a table with statistics the planner walks that
# index in order and stops after LIMIT rows. Rows locked by another claimer are skipped,
# so concurrent workers never wait on each other or claim the same job.
_CLAIM: Final = sql.SQL(
    """
WITH relaxed AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
),
next AS MATERIALIZED (
    SELECT id FROM {jobs}
    WHERE state = 'waiting' AND {queue_match} AND available_at <= now()
    ORDER BY priority DESC, available_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {jobs} AS j
SET state = 'running',
    attempt = j.attempt + 1,
    worker_id = %(worker_id)s,
    lease_token = gen_random_uuid(),
    claimed_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease_s)s::float8)
FROM next, relaxed
WHERE j.id = next.id
RETURNING {record}
"""
)

# Seconds from now until the earliest waiting job of the given queues is due (zero or
# negative when one is due already), NULL when none is waiting. One ordered index probe
# per queue on jobs_unfinished_idx (queue, state, available_at).
_SECONDS_UNTIL_DUE: Final = sql.SQL(
    """
SELECT extract(epoch FROM min(d.available_at) - now())::float8
FROM unnest(%(queues)s::text[]) AS q(queue)
CROSS JOIN LATERAL (
    SELECT available_at FROM {jobs}
    WHERE state = 'waiting' AND queue = q.queue
    ORDER BY available_at
    LIMIT 1
) AS d
"""
)

# Extend held leases and return the ids whose lease is lost: rows whose token changed
# (rescued, or claimed again) or that are gone. A row still carrying the token but no
# longer running was finished by this same claim, which is not a loss.
_RENEW: Final = sql.SQL(
    """
WITH relaxed AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
),
held AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS h(id, token)
),
renewed AS (
    UPDATE {jobs} AS j
    SET lease_expires_at = now() + make_interval(secs => %(lease_s)s::float8)
    FROM held, relaxed
    WHERE j.id = held.id AND j.lease_token = held.token AND j.state = 'running'
    RETURNING j.id
)
SELECT held.id FROM held
WHERE held.id NOT IN (SELECT id FROM renewed)
  AND NOT EXISTS (SELECT 1 FROM {jobs} AS j WHERE j.id = held.id AND j.lease_token = held.token)
"""
)

_SUCCEED: Final = sql.SQL(
    """
UPDATE {jobs} AS j
SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS done(id, token)
WHERE j.id = done.id AND j.lease_token = done.token AND j.state = 'running'
RETURNING j.id
"""
)

# The statements below update one job and return its id, or nothing when the lease
# token no longer matches (the caller then raises LeaseLostError).
_RETRY: Final = sql.SQL(
    """
WITH done AS (
    UPDATE {jobs}
    SET state = 'waiting', available_at = coalesce(%(retry_at)s, now()),
        last_error = %(error)s, last_error_type = %(error_type)s, lease_expires_at = NULL
    WHERE id = %(id)s AND lease_token = %(token)s AND state = 'running'
    RETURNING id, queue
)
SELECT done.id, pg_notify(%(channel)s, done.queue) FROM done
"""
)

_BURY: Final = sql.SQL(
    """
UPDATE {jobs}
SET state = 'dead', finished_at = now(), last_error = %(error)s,
    last_error_type = %(error_type)s, lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND state = 'running'
RETURNING id
"""
)

# Shutdown gave the job back (cancelled mid-run or never started): the attempt does not
# count, and available_at is kept so the job keeps its place in the queue.
_GIVE_BACK: Final = sql.SQL(
    """
WITH done AS (
    UPDATE {jobs}
    SET state = 'waiting', attempt = greatest(attempt - 1, 0), lease_expires_at = NULL
    WHERE id = %(id)s AND lease_token = %(token)s AND state = 'running'
    RETURNING id, queue
)
SELECT done.id, pg_notify(%(channel)s, done.queue) FROM done
"""
)

# Expired leases back to waiting, or to dead when the attempt was the last. A rescued
# job is due from the moment its lease expired, which keeps its place near the front.
# SKIP LOCKED lets any number of workers rescue at once without waiting or double work.
_RESCUE: Final = sql.SQL(
    """
WITH relaxed AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
),
expired AS MATERIALIZED (
    SELECT id FROM {jobs}
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE {jobs} AS j
    SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'waiting' END,
        available_at = CASE WHEN j.attempt >= j.max_attempts THEN j.available_at
                            ELSE j.lease_expires_at END,
        finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
        last_error = 'lease expired: worker ' || coalesce(j.worker_id, 'unknown')
                     || ' stopped renewing it',
        last_error_type = 'LeaseExpired',
        lease_token = NULL,
        lease_expires_at = NULL
    FROM expired, relaxed
    WHERE j.id = expired.id
    RETURNING j.id, j.name, j.queue, j.attempt, j.state = 'dead' AS dead
),
woken AS (
    SELECT count(pg_notify(%(channel)s, q.queue)) AS notified
    FROM (SELECT DISTINCT queue FROM rescued WHERE NOT dead) AS q
)
SELECT id, name, queue, attempt, dead FROM rescued CROSS JOIN woken
"""
)

_PRUNE: Final = sql.SQL(
    """
WITH old AS (
    SELECT id FROM {jobs}
    WHERE state = 'succeeded' AND finished_at < now() - make_interval(secs => %(age_s)s::float8)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM {jobs} AS j USING old WHERE j.id = old.id RETURNING 1
)
SELECT count(*) FROM deleted
"""
)

# Reads only rows of jobs_unfinished_idx (waiting, running and dead jobs), never the
# succeeded history, and can run as an index-only scan.
_STATS: Final = sql.SQL(
    """
SELECT queue,
       count(*) FILTER (WHERE state = 'waiting' AND available_at <= now()) AS ready,
       count(*) FILTER (WHERE state = 'waiting' AND available_at > now()) AS scheduled,
       count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'dead') AS dead,
       min(available_at) FILTER (WHERE state = 'waiting' AND available_at <= now())
FROM {jobs}
WHERE state IN ('waiting', 'running', 'dead')
GROUP BY queue
ORDER BY queue
"""
)

_DEAD_JOBS: Final = sql.SQL(
    """
SELECT id, name, queue, attempt, last_error, finished_at, args, kwargs
FROM {jobs}
WHERE state = 'dead' AND {queue_match}
ORDER BY finished_at DESC, id DESC
LIMIT %(limit)s
"""
)

# A dead job whose unique key is now held by another waiting or running job stays dead:
# requeueing it would make two live jobs with one key.
_REQUEUE: Final = sql.SQL(
    """
WITH moved AS (
    UPDATE {jobs} AS j
    SET state = 'waiting', attempt = 0, available_at = now(), finished_at = NULL,
        worker_id = NULL
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state = 'dead'
      AND (j.unique_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {jobs} AS other
          WHERE other.unique_key = j.unique_key AND other.state IN ('waiting', 'running')
      ))
    RETURNING j.id, j.queue
),
woken AS (
    SELECT count(pg_notify(%(channel)s, q.queue)) AS notified
    FROM (SELECT DISTINCT queue FROM moved) AS q
)
SELECT count(*) FROM moved CROSS JOIN woken
"""
)
