-- Named queries. `{schema}` is replaced by the quoted schema name (psycopg.sql.Identifier),
-- so literal braces are written doubled. Parameters use psycopg's %(name)s style.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)

-- name: migration_lock
SELECT pg_advisory_xact_lock(%(key)s)

-- name: applied_migrations
SELECT version FROM {schema}.migrations ORDER BY version

-- name: record_migration
INSERT INTO {schema}.migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: schema_version
SELECT max(version) FROM {schema}.migrations

-- name: server_version
SELECT current_setting('server_version_num')::int

-- name: enqueue
SELECT {schema}.enqueue(
    task => %(task)s, args => %(args)s::jsonb, kwargs => %(kwargs)s::jsonb, queue => %(queue)s,
    priority => %(priority)s, run_at => coalesce(%(run_at)s, now() + %(delay)s),
    dedup_key => %(dedup_key)s, max_attempts => %(max_attempts)s)

-- name: reserve_job_ids
SELECT array_agg(nextval(%(sequence)s::regclass)), now() FROM generate_series(1, %(n)s)

-- name: copy_jobs
COPY {schema}.jobs (id, task, queue, args, kwargs, priority, run_at, max_attempts) FROM STDIN

-- name: active_queues
SELECT name FROM {schema}.queues
WHERE NOT paused AND (%(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[]))
ORDER BY name

-- name: claim_jobs
-- Per queue, take the best rows the index yields (skipping rows other workers hold),
-- then keep the overall best `limit` of them by priority, run_at, id.
WITH picked AS (
    SELECT c.id
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at
        FROM {schema}.jobs j
        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= now()
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s
)
UPDATE {schema}.jobs j
SET state = 'running', attempt = j.attempt + 1, started_at = now(), worker_id = %(worker_id)s
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.task, j.queue, j.args, j.kwargs, j.priority, j.attempt, j.max_attempts,
          j.enqueued_at, j.run_at, j.started_at, j.dedup_key

-- name: complete_jobs
WITH done AS (
    DELETE FROM {schema}.jobs
    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id = %(worker_id)s AND state = 'running'
    RETURNING *
)
INSERT INTO {schema}.job_history (id, task, queue, args, kwargs, priority, state, attempt,
    max_attempts, run_at, enqueued_at, started_at, finished_at, worker_id, dedup_key, errors)
SELECT id, task, queue, args, kwargs, priority, 'succeeded', attempt, max_attempts, run_at,
       enqueued_at, started_at, now(), worker_id, dedup_key, errors
FROM done

-- name: retry_jobs
UPDATE {schema}.jobs j
SET state = 'queued', worker_id = NULL, run_at = now() + make_interval(secs => f.delay),
    errors = j.errors || f.error
FROM unnest(%(ids)s::bigint[], %(delays)s::float8[], %(errors)s::jsonb[]) AS f(id, delay, error)
WHERE j.id = f.id AND j.worker_id = %(worker_id)s AND j.state = 'running'

-- name: bury_jobs
WITH f AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(errors)s::jsonb[]) AS f(id, error)
), done AS (
    DELETE FROM {schema}.jobs j USING f
    WHERE j.id = f.id AND j.worker_id = %(worker_id)s AND j.state = 'running'
    RETURNING j.*, f.error
)
INSERT INTO {schema}.job_history (id, task, queue, args, kwargs, priority, state, attempt,
    max_attempts, run_at, enqueued_at, started_at, finished_at, worker_id, dedup_key, errors)
SELECT id, task, queue, args, kwargs, priority, 'dead', attempt, max_attempts, run_at,
       enqueued_at, started_at, now(), worker_id, dedup_key, errors || error
FROM done

-- name: release_jobs
-- Shutdown hands unfinished jobs back; the attempt stays counted because the handler began.
WITH released AS (
    UPDATE {schema}.jobs
    SET state = 'queued', worker_id = NULL, run_at = now()
    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id = %(worker_id)s AND state = 'running'
    RETURNING queue
)
SELECT count(*) FROM (SELECT pg_notify(%(channel)s, d.queue) FROM (SELECT DISTINCT queue FROM released) d) n

-- name: reserve_worker_id
SELECT nextval(%(sequence)s::regclass)

-- name: try_worker_lock
SELECT pg_try_advisory_lock(%(key)s)

-- name: register_worker
INSERT INTO {schema}.workers (id, host, pid, queues, concurrency)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s)

-- name: heartbeat
UPDATE {schema}.workers SET heartbeat_at = now() WHERE id = %(id)s

-- name: unregister_worker
WITH gone AS (DELETE FROM {schema}.workers WHERE id = %(id)s)
SELECT pg_advisory_unlock(%(key)s)

-- name: rescue_jobs
-- A worker holds a session advisory lock (namespace, worker id) for as long as it lives.
-- pg_locks is read after this statement's snapshot, so every job the snapshot shows as
-- running was claimed by a worker whose lock, if still held, appears here.
WITH live AS (
    SELECT l.objid::bigint AS worker_id
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.classid = %(namespace)s::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), orphans AS (
    SELECT j.id, j.worker_id
    FROM {schema}.jobs j
    WHERE j.state = 'running' AND j.worker_id NOT IN (SELECT worker_id FROM live)
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs j
    SET state = 'queued', worker_id = NULL, run_at = now(),
        errors = j.errors || jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'kind', 'worker_lost',
            'error', format('worker %%s was lost while running attempt %%s', o.worker_id, j.attempt))
    FROM orphans o
    WHERE j.id = o.id
    RETURNING j.id, j.queue
), gone AS (
    DELETE FROM {schema}.workers w WHERE w.id NOT IN (SELECT worker_id FROM live)
)
SELECT r.id, pg_notify(%(channel)s, r.queue) FROM rescued r

-- name: prune_history
WITH doomed AS (
    SELECT id FROM {schema}.job_history
    WHERE finished_at < %(before)s AND state = ANY(%(states)s::{schema}.job_state[])
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.job_history h USING doomed WHERE h.id = doomed.id

-- name: get_job
SELECT id, task, queue, args, kwargs, priority, state, attempt, max_attempts, run_at,
       enqueued_at, started_at, NULL::timestamptz AS finished_at, worker_id, dedup_key, errors
FROM {schema}.jobs WHERE id = %(id)s
UNION ALL
SELECT id, task, queue, args, kwargs, priority, state, attempt, max_attempts, run_at,
       enqueued_at, started_at, finished_at, worker_id, dedup_key, errors
FROM {schema}.job_history WHERE id = %(id)s

-- name: set_queue_paused
INSERT INTO {schema}.queues (name, paused) VALUES (%(queue)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused

-- name: count_unfinished
SELECT count(*) FROM {schema}.jobs

-- name: count_history
SELECT count(*) FROM {schema}.job_history

-- name: count_workers
SELECT count(*) FROM {schema}.workers

-- name: bench_latency
-- Enqueue-to-start latency (ms) of the given jobs, from the database's own timestamps.
SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM started_at - enqueued_at) * 1000)
FROM {schema}.job_history WHERE id = ANY(%(ids)s::bigint[])

-- name: bench_drain
-- Span from the first start to the last finish of the given jobs, in seconds.
SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))
FROM {schema}.job_history WHERE id = ANY(%(ids)s::bigint[])

-- name: bench_clear_history
TRUNCATE {schema}.job_history

-- name: bench_vacuum
VACUUM ANALYZE {schema}.jobs

-- name: bench_fill_history
-- Synthetic finished jobs, to measure claims with a large history (negative ids: no clash).
INSERT INTO {schema}.job_history (id, task, queue, args, kwargs, priority, state, attempt,
    max_attempts, run_at, enqueued_at, started_at, finished_at, worker_id, dedup_key, errors)
SELECT -g, 'bench.filler', 'bench', '[]', '{{}}', 0, 'succeeded', 1, 1, now(), now(), now(),
       now(), NULL, NULL, '[]'
FROM generate_series(%(start)s, %(stop)s) g

-- name: state_counts
-- Jobs per queue and state; finished states counted over the last `window`.
SELECT queue, state::text, count(*) FROM {schema}.jobs GROUP BY 1, 2
UNION ALL
SELECT queue, state::text, count(*) FROM {schema}.job_history
WHERE finished_at > now() - %(window)s::interval GROUP BY 1, 2
ORDER BY 1, 2

-- name: release_unknown_jobs
-- Jobs claimed for this live worker that it does not hold: a claim whose reply was lost.
-- They never started, so the attempt is given back.
WITH released AS (
    UPDATE {schema}.jobs
    SET state = 'queued', worker_id = NULL, started_at = NULL, attempt = attempt - 1
    WHERE worker_id = %(worker_id)s AND state = 'running' AND NOT (id = ANY(%(known)s::bigint[]))
    RETURNING id, queue
)
SELECT r.id, pg_notify(%(channel)s, r.queue) FROM released r
