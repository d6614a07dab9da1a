-- Named queries. `{schema}` is replaced by the quoted schema name (psycopg.sql.Identifier),
-- so literal braces are written doubled. Parameters use psycopg's %(name)s style.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)

-- name: migration_lock
-- Serialises migrations. A table lock in a self-conflicting mode needs UPDATE, DELETE or
-- TRUNCATE on the table, which only the schema's owner has: unlike an advisory key, a
-- producer or worker role cannot take it and block migrations.
LOCK TABLE {schema}.migrations IN SHARE ROW EXCLUSIVE MODE

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

-- name: enqueue_many
-- The kwargs go as one binary text[] (no per-element quoting); ids come back in order.
SELECT {schema}.enqueue_many(
    task => %(task)s, kwargs => %(kwargs)b::jsonb[], queue => %(queue)s,
    priority => %(priority)s, run_at => coalesce(%(run_at)s, now() + %(delay)s),
    max_attempts => %(max_attempts)s)

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
-- Timestamps are clamped into what Python's datetime holds: a row with run_at '-infinity'
-- (SQL callers can write one) must not stop the claim.
RETURNING j.id, j.task, j.queue, j.args, j.kwargs, j.priority, j.attempt, j.max_attempts,
          least(greatest(j.enqueued_at, '0002-01-01Z'), '9998-12-31Z'),
          least(greatest(j.run_at, '0002-01-01Z'), '9998-12-31Z'), j.started_at, j.dedup_key

-- name: complete_jobs
-- Acks match (id, worker_id, running). The worker id is the run's generation: a rescue
-- removes the worker's row in the statement that takes its jobs, and the database then
-- refuses that id back (reattach_worker), so a run that was rescued can never ack the job
-- again under its id. (The rarer outcomes below match the attempt as well.) No join here: a
-- join lets the planner hash the whole, often bloated, hot table on every ack.
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
-- A history row with this id can only be a stray (an operator's insert): the job's own
-- outcome wins, so an ack never fails on it.
ON CONFLICT (id) DO UPDATE SET
    task = EXCLUDED.task, queue = EXCLUDED.queue, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs,
    priority = EXCLUDED.priority, state = EXCLUDED.state, attempt = EXCLUDED.attempt,
    max_attempts = EXCLUDED.max_attempts, run_at = EXCLUDED.run_at,
    enqueued_at = EXCLUDED.enqueued_at, started_at = EXCLUDED.started_at,
    finished_at = EXCLUDED.finished_at, worker_id = EXCLUDED.worker_id,
    dedup_key = EXCLUDED.dedup_key, errors = EXCLUDED.errors

-- name: retry_jobs
UPDATE {schema}.jobs j
SET state = 'queued', worker_id = NULL, run_at = now() + make_interval(secs => f.delay),
    errors = j.errors || f.error
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(delays)s::float8[], %(errors)s::jsonb[])
     AS f(id, attempt, delay, error)
WHERE j.id = f.id AND j.attempt = f.attempt AND j.worker_id = %(worker_id)s
  AND j.state = 'running'

-- name: bury_jobs
WITH f AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(errors)s::jsonb[])
        AS f(id, attempt, error)
), done AS (
    DELETE FROM {schema}.jobs j USING f
    WHERE j.id = f.id AND j.attempt = f.attempt AND j.worker_id = %(worker_id)s
      AND j.state = 'running'
    RETURNING j.*, f.error
)
INSERT INTO {schema}.job_history (id, task, queue, args, kwargs, priority, state, attempt,
    max_attempts, run_at, enqueued_at, started_at, finished_at, worker_id, dedup_key, errors)
SELECT id, task, queue, args, kwargs, priority, 'dead', attempt, max_attempts, run_at,
       enqueued_at, started_at, now(), worker_id, dedup_key, errors || error
FROM done
-- A history row with this id can only be a stray (an operator's insert): the job's own
-- outcome wins, so an ack never fails on it.
ON CONFLICT (id) DO UPDATE SET
    task = EXCLUDED.task, queue = EXCLUDED.queue, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs,
    priority = EXCLUDED.priority, state = EXCLUDED.state, attempt = EXCLUDED.attempt,
    max_attempts = EXCLUDED.max_attempts, run_at = EXCLUDED.run_at,
    enqueued_at = EXCLUDED.enqueued_at, started_at = EXCLUDED.started_at,
    finished_at = EXCLUDED.finished_at, worker_id = EXCLUDED.worker_id,
    dedup_key = EXCLUDED.dedup_key, errors = EXCLUDED.errors

-- name: release_jobs
-- A clean shutdown hands unfinished jobs back: the attempt is given back (the handler was
-- stopped, it did not fail) and a `released` record says why the job runs again. The job
-- keeps its run_at, and so its place in the queue.
WITH released AS (
    UPDATE {schema}.jobs j
    SET state = 'queued', worker_id = NULL, attempt = j.attempt - 1,
        errors = j.errors || jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'kind', 'released',
            'error', format('handed back by worker %%s at shutdown; the attempt is not counted',
                            j.worker_id))
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.worker_id = %(worker_id)s AND j.state = 'running'
      AND j.attempt = (%(attempts)s::int[])[array_position(%(ids)s::bigint[], j.id)]
    RETURNING j.queue
)
SELECT count(*) FROM (SELECT pg_notify(%(channel)s, d.queue) FROM (SELECT DISTINCT queue FROM released) d) n

-- name: reserve_worker_id
SELECT nextval(%(sequence)s::regclass)

-- name: try_worker_lock
SELECT pg_try_advisory_lock(%(key)s)

-- name: register_worker
-- A fresh id, locked by this session's backend, whose pid the row records: rescuers trust
-- the lock only while that backend holds it. The protocol trigger refuses outdated workers.
INSERT INTO {schema}.workers (id, host, pid, queues, concurrency, rescue_grace, session_pid,
    lock_namespace, protocol)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s,
        make_interval(secs => %(rescue_grace)s), pg_backend_pid(), %(namespace)s, %(protocol)s)

-- name: reattach_worker
-- A worker taking its id back after its session dropped, holding the lock again on this
-- backend. Refused (no row) once its rescue grace has run out or a rescue removed the row:
-- it must then stop its handlers. Returns the ids still running under it, so that it stops
-- the handlers of any job it no longer holds. The row lock orders it against a rescue.
UPDATE {schema}.workers w
SET lost_at = NULL, heartbeat_at = now(), session_pid = pg_backend_pid()
WHERE w.id = %(id)s AND (w.lost_at IS NULL OR w.lost_at > now() - w.rescue_grace)
RETURNING array(SELECT j.id FROM {schema}.jobs j WHERE j.worker_id = w.id AND j.state = 'running')

-- name: unlock_worker
SELECT pg_advisory_unlock(%(key)s)

-- name: heartbeat
-- No row back: the worker's row was removed (by hand; a rescue also removes it), so its id
-- is retired and the worker must treat its session as lost.
UPDATE {schema}.workers SET heartbeat_at = now() WHERE id = %(id)s RETURNING id

-- name: unregister_worker
WITH gone AS (DELETE FROM {schema}.workers WHERE id = %(id)s)
SELECT pg_advisory_unlock(%(key)s)

-- name: forget_worker
-- The row of a worker stopping after its session (and so its lock) was lost.
DELETE FROM {schema}.workers WHERE id = %(id)s

-- name: rescue_jobs
-- A worker holds a session advisory lock (namespace, worker id) for as long as its session
-- lives, and records that session's backend pid: only a lock held by that backend counts
-- (any role can take any advisory lock; rows of pre-protocol-2 workers have no pid and any
-- holder counts). pg_locks is read after this statement's snapshot, so every job the
-- snapshot shows as running was claimed by a worker whose lock, if still held, appears here.
-- A worker without its lock may still be running handlers and about to take its lock
-- back: the first pass that sees it so stamps lost_at, and its jobs are rescued only once
-- its rescue_grace has passed since then (the worker stops its handlers before that). The
-- lock on its row orders this against the worker taking its id back (reattach_worker).
-- A job whose worker row is gone has no such worker: it is rescued at once. Rescued jobs
-- keep their run_at, and so their place in the queue.
WITH live AS (
    SELECT w.id AS worker_id
    FROM {schema}.workers w
    JOIN pg_locks l ON l.objid = w.id::oid AND (w.session_pid IS NULL OR l.pid = w.session_pid)
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.classid = %(namespace)s::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), seen_lost AS (
    UPDATE {schema}.workers w SET lost_at = now()
    WHERE w.lost_at IS NULL AND w.id NOT IN (SELECT worker_id FROM live)
), back AS (
    UPDATE {schema}.workers w SET lost_at = NULL
    WHERE w.lost_at IS NOT NULL AND w.id IN (SELECT worker_id FROM live)
), expired AS (
    SELECT w.id FROM {schema}.workers w
    WHERE w.lost_at <= now() - w.rescue_grace AND w.id NOT IN (SELECT worker_id FROM live)
    FOR UPDATE OF w SKIP LOCKED
), orphans AS (
    SELECT j.id, j.worker_id
    FROM {schema}.jobs j
    WHERE j.state = 'running' AND j.worker_id NOT IN (SELECT worker_id FROM live)
      AND (j.worker_id IN (SELECT id FROM expired)
           OR NOT EXISTS (SELECT FROM {schema}.workers w WHERE w.id = j.worker_id))
    FOR UPDATE OF j SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs j
    SET state = 'queued', worker_id = NULL,
        errors = j.errors || jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'kind', 'worker_lost',
            'error', format('worker %%s was lost while running attempt %%s', o.worker_id, j.attempt))
    FROM orphans o
    WHERE j.id = o.id
    RETURNING j.id, j.queue
), gone AS (
    DELETE FROM {schema}.workers w WHERE w.id IN (SELECT id FROM expired)
)
SELECT r.id, pg_notify(%(channel)s, r.queue) FROM rescued r

-- name: prune_history
-- Age on the database's clock (a NULL now), never a worker host's: see pgjobs/clock.py.
WITH doomed AS (
    SELECT id FROM {schema}.job_history
    WHERE finished_at < coalesce(%(now)s::timestamptz, now()) - %(retention)s::interval
      AND state = ANY(%(states)s::{schema}.job_state[])
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

-- name: bench_drop_schema
-- The bench's scratch schema, dropped before and after each run.
DROP SCHEMA IF EXISTS {schema} CASCADE

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

-- ==== testing helpers (issue 5) ====
-- Used by pgjobs.testing (helpers for users' test suites) and by `pgjobs demo`.

-- name: testing_jobs
-- Jobs in any state, oldest first; a NULL filter matches everything.
SELECT j.id, j.task, j.queue, j.args, j.kwargs, j.priority, j.state::text, j.attempt,
       j.max_attempts, j.run_at, j.enqueued_at, j.finished_at, j.dedup_key, j.errors
FROM (
    SELECT id, task, queue, args, kwargs, priority, state, attempt, max_attempts, run_at,
           enqueued_at, NULL::timestamptz AS finished_at, dedup_key, errors
    FROM {schema}.jobs
    UNION ALL
    SELECT id, task, queue, args, kwargs, priority, state, attempt, max_attempts, run_at,
           enqueued_at, finished_at, dedup_key, errors
    FROM {schema}.job_history
) j
WHERE (%(task)s::text IS NULL OR j.task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
  AND (%(state)s::text IS NULL OR j.state::text = %(state)s::text)
ORDER BY j.id

-- name: testing_drain_outcomes
-- What the given worker ids did: finished jobs by state, and every error record they wrote
-- (one per failed attempt; a dead job's last record is the attempt that buried it).
SELECT h.state::text AS outcome, count(*) FROM {schema}.job_history h
WHERE h.worker_id = ANY(%(workers)s::bigint[])
GROUP BY 1
UNION ALL
SELECT 'failed_attempts', count(*)
FROM (
    SELECT e.record FROM {schema}.jobs j
    CROSS JOIN LATERAL jsonb_array_elements(j.errors) AS e(record)
    UNION ALL
    SELECT e.record FROM {schema}.job_history h
    CROSS JOIN LATERAL jsonb_array_elements(h.errors) AS e(record)
) r
WHERE jsonb_typeof(r.record -> 'worker_id') = 'number'
  AND (r.record ->> 'worker_id')::bigint = ANY(%(workers)s::bigint[])

-- name: testing_make_due
-- Scheduled jobs (queued, run_at in the future) become eligible now.
UPDATE {schema}.jobs SET run_at = now()
WHERE state = 'queued' AND run_at > now()
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)

-- name: demo_reset
DROP SCHEMA IF EXISTS {schema} CASCADE

-- name: demo_dashboard
-- Per queue: eligible, scheduled (future run_at; retries wait there), running, waiting for
-- a retry, finished within the last `window`, and the failed attempts of all of those.
SELECT queue, sum(queued)::bigint, sum(scheduled)::bigint, sum(running)::bigint,
       sum(retrying)::bigint, sum(succeeded)::bigint, sum(dead)::bigint, sum(failures)::bigint
FROM (
    SELECT queue,
           count(*) FILTER (WHERE state = 'queued' AND run_at <= now()) AS queued,
           count(*) FILTER (WHERE state = 'queued' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'queued' AND attempt > 0) AS retrying,
           0 AS succeeded, 0 AS dead,
           sum(jsonb_array_length(errors)) AS failures
    FROM {schema}.jobs GROUP BY queue
    UNION ALL
    SELECT queue, 0, 0, 0, 0,
           count(*) FILTER (WHERE state = 'succeeded'),
           count(*) FILTER (WHERE state = 'dead'),
           sum(jsonb_array_length(errors))
    FROM {schema}.job_history WHERE finished_at > now() - %(window)s::interval GROUP BY queue
) counts
GROUP BY queue
ORDER BY queue

-- ==== cron (issue 3) ====

-- name: cron_register_lock
-- Serialises the registrations of workers that start together.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: cron_register
-- The code defaults of the schedules a starting worker declares; operator-owned columns
-- are never written here. A schedule whose effective timing changes, or that comes back
-- after it was removed from code, is re-armed from now (the database's, unless a test
-- clock gives one, as in every cron_* query).
INSERT INTO {schema}.schedules AS s (name, task, queue, priority, max_attempts, kwargs, missed,
    code_expression, code_timezone, armed_at, registered_at, seen_at)
SELECT d.name, d.task, d.queue, d.priority, d.max_attempts, d.kwargs, d.missed,
       d.expression, d.timezone, coalesce(%(now)s::timestamptz, now()),
       coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now())
FROM unnest(%(names)s::text[], %(tasks)s::text[], %(queues)s::text[], %(priorities)s::int[],
            %(max_attempts)s::int[], %(kwargs)s::jsonb[], %(missed)s::text[],
            %(expressions)s::text[], %(timezones)s::text[])
     AS d(name, task, queue, priority, max_attempts, kwargs, missed, expression, timezone)
ORDER BY d.name
ON CONFLICT (name) DO UPDATE SET
    task = EXCLUDED.task, queue = EXCLUDED.queue, priority = EXCLUDED.priority,
    max_attempts = EXCLUDED.max_attempts, kwargs = EXCLUDED.kwargs, missed = EXCLUDED.missed,
    code_expression = EXCLUDED.code_expression, code_timezone = EXCLUDED.code_timezone,
    seen_at = EXCLUDED.seen_at, removed_at = NULL,
    next_tick = CASE
        WHEN s.removed_at IS NOT NULL
          OR coalesce(s.override_expression, EXCLUDED.code_expression) <> s.expression
          OR coalesce(s.override_timezone, EXCLUDED.code_timezone) <> s.timezone
        THEN NULL ELSE s.next_tick END,
    armed_at = CASE
        WHEN s.removed_at IS NOT NULL
          OR coalesce(s.override_expression, EXCLUDED.code_expression) <> s.expression
          OR coalesce(s.override_timezone, EXCLUDED.code_timezone) <> s.timezone
        THEN EXCLUDED.armed_at ELSE s.armed_at END,
    revision = s.revision + CASE
        WHEN s.removed_at IS NOT NULL
          OR coalesce(s.override_expression, EXCLUDED.code_expression) <> s.expression
          OR coalesce(s.override_timezone, EXCLUDED.code_timezone) <> s.timezone
        THEN 1 ELSE 0 END
RETURNING s.name, s.enabled, s.expression, s.timezone, s.code_expression, s.code_timezone

-- name: cron_mark_removed
-- Schedules that the starting worker's code no longer declares: they stop firing and
-- are kept, with their runs, for operators to see.
UPDATE {schema}.schedules
SET removed_at = coalesce(%(now)s::timestamptz, now()), revision = revision + 1
WHERE removed_at IS NULL AND NOT (name = ANY(%(names)s::text[]))
RETURNING name

-- name: cron_now
-- The leader's time for a pass: the database's clock, which every worker shares.
SELECT clock_timestamp()

-- name: cron_election_lock
-- Candidates decide one at a time, holding this row's lock until they commit, so a
-- candidate never sees a key taken by a leader that has not yet recorded its pid.
SELECT lock_key FROM {schema}.cron_election FOR UPDATE

-- name: cron_try_lead
SELECT pg_try_advisory_lock(%(key)s)

-- name: cron_elected
-- Records this backend as the leader holding `key` (and, when the election moved away
-- from a foreign holder, whom from).
UPDATE {schema}.cron_election
SET lock_key = %(key)s, leader_pid = pg_backend_pid(), leader = %(by)s, elected_at = now(),
    moved_at = CASE WHEN %(moved_from)s::text IS NULL THEN moved_at ELSE now() END,
    moved_from = coalesce(%(moved_from)s::text, moved_from)

-- name: cron_lock_holder
-- The backend holding `key` (the bigint key split as pg_locks shows it), whether it is the
-- recorded leader, and what pg_stat_activity says about it (role and application are
-- visible for every role's sessions).
SELECT l.pid, l.pid = e.leader_pid AS trusted, a.usename::text, a.application_name
FROM pg_locks l
CROSS JOIN {schema}.cron_election e
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid = (%(key)s::bigint >> 32)::oid
  AND l.objid = (%(key)s::bigint & 4294967295)::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())

-- name: cron_resign
-- Stops leading: the recorded pid goes, then the lock.
WITH resigned AS (
    UPDATE {schema}.cron_election SET leader_pid = NULL WHERE leader_pid = pg_backend_pid()
)
SELECT pg_advisory_unlock(%(key)s)

-- name: cron_leader_exists
-- Whether the elected leader holds the current key. A key held by any other backend (a
-- foreign session) does not count: a candidate then moves the election away from it.
SELECT status = 'leader' FROM {schema}.cron_leader

-- name: cron_leader
SELECT status, leader, holder_pid, holder_role, holder_application, elected_at, moved_at,
       moved_from
FROM {schema}.cron_leader

-- name: cron_active_schedules
SELECT name, expression, timezone, missed, revision, armed_at, next_tick
FROM {schema}.schedules
WHERE enabled AND removed_at IS NULL
ORDER BY name

-- name: cron_fire
-- One statement: record each tick (the unique key skips a tick already recorded), enqueue
-- one job per tick recorded here, and advance the schedule. Nothing is written if the
-- schedule changed (revision) since the leader read it.
WITH s AS (
    SELECT name, task, queue, priority, max_attempts, kwargs
    FROM {schema}.schedules
    WHERE name = %(name)s AND revision = %(revision)s AND enabled AND removed_at IS NULL
    FOR NO KEY UPDATE
), runs AS (
    INSERT INTO {schema}.cron_runs (job_id, schedule, tick_at, trigger, triggered_by, enqueued_at)
    SELECT nextval(%(sequence)s::regclass), s.name, t.tick, 'schedule', %(by)s,
           coalesce(%(now)s::timestamptz, now())
    FROM s CROSS JOIN unnest(%(ticks)s::timestamptz[]) WITH ORDINALITY AS t(tick, n)
    ORDER BY t.n
    ON CONFLICT (schedule, tick_at) DO NOTHING
    RETURNING job_id
), queued AS (
    INSERT INTO {schema}.jobs (id, task, queue, kwargs, priority, max_attempts)
    SELECT r.job_id, s.task, s.queue, s.kwargs, s.priority, s.max_attempts
    FROM runs r CROSS JOIN s
    ORDER BY r.job_id
    RETURNING id
), advanced AS (
    UPDATE {schema}.schedules u
    SET next_tick = %(next_tick)s, last_tick = greatest(u.last_tick, %(last_tick)s)
    FROM s
    WHERE u.name = s.name
    RETURNING u.name
)
SELECT (SELECT count(*) FROM advanced), array(SELECT id FROM queued ORDER BY id)

-- name: cron_record_outcomes
-- Copies the outcome of finished runs from job_history, so that a schedule's history
-- outlives job pruning; closes runs whose job was deleted by hand.
UPDATE {schema}.cron_runs r
SET state = f.state, attempts = f.attempt, started_at = f.started_at,
    finished_at = f.finished_at
FROM (
    SELECT o.job_id, h.state, h.attempt, h.started_at, coalesce(h.finished_at, now()) AS finished_at
    FROM {schema}.cron_runs o
    LEFT JOIN {schema}.job_history h ON h.id = o.job_id
    WHERE o.finished_at IS NULL
      AND (h.id IS NOT NULL OR NOT EXISTS (SELECT FROM {schema}.jobs j WHERE j.id = o.job_id))
) f
WHERE r.job_id = f.job_id

-- name: cron_prune_runs
-- Finished runs past retention, except each schedule's latest run.
WITH doomed AS (
    SELECT r.job_id
    FROM {schema}.cron_runs r
    WHERE r.enqueued_at < coalesce(%(now)s::timestamptz, now()) - %(retention)s::interval
      AND r.finished_at IS NOT NULL
      AND r.job_id < (SELECT max(l.job_id) FROM {schema}.cron_runs l WHERE l.schedule = r.schedule)
    LIMIT %(limit)s
)
DELETE FROM {schema}.cron_runs r USING doomed d WHERE r.job_id = d.job_id

-- name: cron_list
-- Schedules with their latest run and the success rate of their recent finished runs.
SELECT s.name, s.task, s.queue, s.expression, s.timezone, s.code_expression, s.code_timezone,
       s.override_expression, s.override_timezone, s.enabled, s.missed, s.armed_at,
       s.next_tick, s.last_tick, s.registered_at, s.removed_at, s.updated_at, s.updated_by,
       last.job_id, last.tick_at, last.trigger, last.triggered_by, last.enqueued_at,
       last.state, last.attempts, last.started_at, last.finished_at, last.last_error,
       stats.succeeded, stats.failed
FROM {schema}.schedules s
LEFT JOIN LATERAL (
    SELECT c.job_id, c.tick_at, c.trigger, c.triggered_by, c.enqueued_at, c.state,
           c.attempts, c.started_at, c.finished_at, c.last_error
    FROM {schema}.cron_history c
    WHERE c.schedule = s.name
    ORDER BY c.job_id DESC
    LIMIT 1
) last ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE recent.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE recent.state = 'dead') AS failed
    FROM (
        SELECT c.state
        FROM {schema}.cron_history c
        WHERE c.schedule = s.name AND c.state IN ('succeeded', 'dead')
        ORDER BY c.job_id DESC
        LIMIT %(window)s
    ) recent
) stats ON true
WHERE %(name)s::text IS NULL OR s.name = %(name)s::text
ORDER BY s.name

-- name: cron_history
SELECT job_id, tick_at, trigger, triggered_by, enqueued_at, state, attempts, started_at,
       finished_at, last_error
FROM {schema}.cron_history
WHERE schedule = %(name)s
ORDER BY job_id DESC
LIMIT %(limit)s

-- name: cron_schedule_exists
SELECT removed_at FROM {schema}.schedules WHERE name = %(name)s

-- name: cron_override
-- An operator's timing; a NULL timezone keeps the timezone in effect.
UPDATE {schema}.schedules s
SET override_expression = %(expression)s,
    override_timezone = coalesce(%(timezone)s::text, s.override_timezone),
    next_tick = CASE WHEN %(expression)s <> s.expression
                       OR coalesce(%(timezone)s::text, s.timezone) <> s.timezone
                     THEN NULL ELSE s.next_tick END,
    armed_at = CASE WHEN %(expression)s <> s.expression
                      OR coalesce(%(timezone)s::text, s.timezone) <> s.timezone
                    THEN coalesce(%(now)s::timestamptz, now()) ELSE s.armed_at END,
    revision = s.revision + 1, updated_at = coalesce(%(now)s::timestamptz, now()),
    updated_by = %(by)s
WHERE s.name = %(name)s
RETURNING s.name

-- name: cron_reset
-- Drops the operator's timing: the code's expression and timezone apply again.
UPDATE {schema}.schedules s
SET override_expression = NULL, override_timezone = NULL,
    next_tick = CASE WHEN s.code_expression <> s.expression OR s.code_timezone <> s.timezone
                     THEN NULL ELSE s.next_tick END,
    armed_at = CASE WHEN s.code_expression <> s.expression OR s.code_timezone <> s.timezone
                    THEN coalesce(%(now)s::timestamptz, now()) ELSE s.armed_at END,
    revision = s.revision + 1, updated_at = coalesce(%(now)s::timestamptz, now()),
    updated_by = %(by)s
WHERE s.name = %(name)s
RETURNING s.name

-- name: cron_set_enabled
-- Enabling re-arms from now: ticks that passed while disabled were not missed, they were
-- not wanted.
UPDATE {schema}.schedules s
SET enabled = %(enabled)s,
    next_tick = CASE WHEN %(enabled)s AND NOT s.enabled THEN NULL ELSE s.next_tick END,
    armed_at = CASE WHEN %(enabled)s AND NOT s.enabled THEN coalesce(%(now)s::timestamptz, now())
                    ELSE s.armed_at END,
    revision = s.revision + 1, updated_at = coalesce(%(now)s::timestamptz, now()),
    updated_by = %(by)s
WHERE s.name = %(name)s
RETURNING s.name

-- name: cron_lock_schedule
-- Serialises manual triggers of one schedule (the check for active runs, then the insert).
SELECT removed_at FROM {schema}.schedules WHERE name = %(name)s FOR NO KEY UPDATE

-- name: cron_active_runs
SELECT j.id, j.state::text
FROM {schema}.cron_runs r
JOIN {schema}.jobs j ON j.id = r.job_id
WHERE r.schedule = %(name)s AND r.finished_at IS NULL
ORDER BY j.id

-- name: cron_run_now
WITH s AS (
    SELECT name, task, queue, priority, max_attempts, kwargs
    FROM {schema}.schedules WHERE name = %(name)s
), run AS (
    INSERT INTO {schema}.cron_runs (job_id, schedule, trigger, triggered_by, enqueued_at)
    SELECT nextval(%(sequence)s::regclass), s.name, %(trigger)s, %(by)s,
           coalesce(%(now)s::timestamptz, now())
    FROM s
    RETURNING job_id
)
INSERT INTO {schema}.jobs (id, task, queue, kwargs, priority, max_attempts)
SELECT run.job_id, s.task, s.queue, s.kwargs, s.priority, s.max_attempts
FROM run CROSS JOIN s
RETURNING id

-- ==== operations (issue 4) ====
-- The admin API (pgjobs.admin, what the CLI runs), worker metrics and health checks.

-- name: admin_list_active_jobs
-- Queued and running jobs, newest first; a NULL filter matches everything.
SELECT id, task, queue, state::text, priority, attempt, max_attempts, run_at, enqueued_at,
       started_at, NULL::timestamptz AS finished_at, worker_id, dedup_key,
       errors -> -1 ->> 'error' AS last_error
FROM {schema}.jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s::{schema}.job_state)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
ORDER BY id DESC
LIMIT %(limit)s

-- name: admin_list_finished_jobs
-- Finished jobs, newest first; a NULL filter matches everything.
SELECT id, task, queue, state::text, priority, attempt, max_attempts, run_at, enqueued_at,
       started_at, finished_at, worker_id, dedup_key,
       errors -> -1 ->> 'error' AS last_error
FROM {schema}.job_history
WHERE (%(state)s::text IS NULL OR state = %(state)s::{schema}.job_state)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
ORDER BY id DESC
LIMIT %(limit)s

-- name: admin_list_dead_jobs
-- admin_list_finished_jobs for dead jobs: the literal state lets it walk
-- job_history_dead_id_idx instead of filtering the whole history.
SELECT id, task, queue, state::text, priority, attempt, max_attempts, run_at, enqueued_at,
       started_at, finished_at, worker_id, dedup_key,
       errors -> -1 ->> 'error' AS last_error
FROM {schema}.job_history
WHERE state = 'dead'
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
ORDER BY id DESC
LIMIT %(limit)s

-- name: admin_retry_jobs
-- Dead or cancelled jobs back to queued in one statement: each history row moves to jobs
-- with its attempt count reset and a "retried" record added to its errors. A job whose
-- dedup_key an unfinished job holds (or a newer job of this batch also has) stays where
-- it is: it comes back with the holder's id instead of NULL.
WITH candidates AS (
    SELECT h.id, h.dedup_key
    FROM {schema}.job_history h
    WHERE h.id = ANY(%(ids)s::bigint[]) AND h.state IN ('dead', 'cancelled')
    FOR UPDATE
), blocked AS (
    SELECT c.id, coalesce(
        (SELECT j.id FROM {schema}.jobs j WHERE j.dedup_key = c.dedup_key),
        (SELECT max(o.id) FROM candidates o WHERE o.dedup_key = c.dedup_key AND o.id > c.id)
    ) AS holder
    FROM candidates c
    WHERE c.dedup_key IS NOT NULL
), moved AS (
    DELETE FROM {schema}.job_history h
    USING candidates c
    WHERE h.id = c.id
      AND NOT EXISTS (SELECT FROM blocked b WHERE b.id = c.id AND b.holder IS NOT NULL)
    RETURNING h.*
), queued AS (
    INSERT INTO {schema}.jobs (id, task, queue, args, kwargs, priority, attempt, max_attempts,
        run_at, enqueued_at, dedup_key, errors)
    SELECT id, task, queue, args, kwargs, priority, 0, max_attempts, now(), enqueued_at,
           dedup_key, errors || jsonb_build_object(
               'attempt', attempt, 'at', now(), 'kind', 'retried',
               'error', 'retried by an operator after it was ' || state::text)
    FROM moved
    RETURNING id
)
SELECT id, NULL::bigint AS holder FROM queued
UNION ALL
SELECT id, holder FROM blocked WHERE holder IS NOT NULL

-- name: admin_dead_job_ids
-- The next `limit` dead jobs after id `after` (job_history_dead_id_idx), of one queue or all.
SELECT id FROM {schema}.job_history
WHERE state = 'dead' AND id > %(after)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id
LIMIT %(limit)s

-- name: admin_count_dead
SELECT count(*) FROM {schema}.job_history
WHERE state = 'dead' AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)

-- name: admin_cancel_job
-- A queued job moves to history as cancelled; a running (or already finished) one does not.
WITH gone AS (
    DELETE FROM {schema}.jobs WHERE id = %(id)s AND state = 'queued'
    RETURNING *
)
INSERT INTO {schema}.job_history (id, task, queue, args, kwargs, priority, state, attempt,
    max_attempts, run_at, enqueued_at, started_at, finished_at, worker_id, dedup_key, errors)
SELECT id, task, queue, args, kwargs, priority, 'cancelled', attempt, max_attempts, run_at,
       enqueued_at, started_at, now(), worker_id, dedup_key, errors
FROM gone
RETURNING id

-- name: admin_job_state
SELECT state::text FROM {schema}.jobs WHERE id = %(id)s
UNION ALL
SELECT state::text FROM {schema}.job_history WHERE id = %(id)s

-- name: admin_count_purgeable
SELECT count(*) FROM {schema}.job_history
WHERE finished_at < coalesce(%(now)s::timestamptz, now()) - %(retention)s::interval
  AND state = ANY(%(states)s::{schema}.job_state[])

-- name: admin_pause_queue
UPDATE {schema}.queues SET paused = %(paused)s WHERE name = %(queue)s RETURNING name

-- name: admin_queue_names
SELECT name FROM {schema}.queues ORDER BY name

-- name: admin_queue_stats
SELECT queue, paused, queued, scheduled, running, oldest_queued_age, succeeded_1h, dead_1h,
       cancelled_1h
FROM {schema}.queue_stats
ORDER BY queue

-- name: admin_task_stats
SELECT task, finished, succeeded, dead, cancelled, per_second, failure_rate, retries,
       p50_seconds, p95_seconds, p99_seconds, max_seconds
FROM {schema}.task_stats(%(span)s::interval)
ORDER BY task

-- name: admin_workers
SELECT id, host, pid, queues, concurrency, running, started_at, heartbeat_at, heartbeat_age,
       lost_at, session, session_pid, lock_holder_pid
FROM {schema}.worker_status
ORDER BY id

-- name: admin_running_jobs
-- The longest-running jobs first.
SELECT id, task, queue, attempt, max_attempts, worker_id, host, pid, started_at, runtime
FROM {schema}.running_jobs
ORDER BY started_at, id
LIMIT %(limit)s

-- name: metrics_queue_depth
-- Only the hot table: the planner drops the view's join to job_history.
SELECT queue, paused, queued, scheduled, running, oldest_queued_age
FROM {schema}.queue_stats
ORDER BY queue
