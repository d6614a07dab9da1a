-- pgjobs schema, version 3: monitoring views and the indexes that keep them cheap.
-- Runs with search_path set to the target schema. Views and the BEGIN ATOMIC function are
-- bound to these tables when created, so they work whatever the caller's search_path is.
-- Every view reads only the hot table `jobs`, the small `workers` table, or a recent
-- window of `job_history` through an index: cheap however much history accumulates.

-- Recent windows of history (finished_at > now() - span) use the BRIN index of version 1:
-- a block range is read only if a row that finished in the window landed in it.
-- Walks dead jobs in id order (`pgjobs jobs retry --all-dead` works through them in batches).
CREATE INDEX job_history_dead_id_idx ON job_history (id) WHERE state = 'dead';

-- One row per queue: jobs by state and how long the oldest eligible job has waited.
--   queued             eligible now (state queued, run_at <= now())
--   scheduled          queued with run_at in the future
--   running            claimed by a worker
--   oldest_queued_age  now() - run_at of the oldest eligible job (NULL when none)
--   succeeded_1h, dead_1h, cancelled_1h   finished in the last hour
CREATE VIEW queue_stats AS
SELECT q.name AS queue,
       q.paused,
       coalesce(j.queued, 0) AS queued,
       coalesce(j.scheduled, 0) AS scheduled,
       coalesce(j.running, 0) AS running,
       now() - j.oldest_run_at AS oldest_queued_age,
       coalesce(h.succeeded, 0) AS succeeded_1h,
       coalesce(h.dead, 0) AS dead_1h,
       coalesce(h.cancelled, 0) AS cancelled_1h
FROM queues q
LEFT JOIN (
    SELECT jobs.queue,
           count(*) FILTER (WHERE jobs.state = 'queued' AND jobs.run_at <= now()) AS queued,
           count(*) FILTER (WHERE jobs.state = 'queued' AND jobs.run_at > now()) AS scheduled,
           count(*) FILTER (WHERE jobs.state = 'running') AS running,
           min(jobs.run_at) FILTER (WHERE jobs.state = 'queued' AND jobs.run_at <= now())
               AS oldest_run_at
    FROM jobs
    GROUP BY jobs.queue
) j ON j.queue = q.name
LEFT JOIN (
    SELECT job_history.queue,
           count(*) FILTER (WHERE job_history.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE job_history.state = 'dead') AS dead,
           count(*) FILTER (WHERE job_history.state = 'cancelled') AS cancelled
    FROM job_history
    WHERE job_history.finished_at > now() - interval '1 hour'
    GROUP BY job_history.queue
) h ON h.queue = q.name;

-- Per task statistics of the jobs that finished within `span` of now():
--   finished, succeeded, dead, cancelled   counts
--   per_second        finished jobs per second over the window
--   failure_rate      dead / (succeeded + dead), NULL when neither
--   retries           attempts beyond the first, over succeeded and dead jobs
--   p50/p95/p99/max_seconds   run time of the last attempt (finished_at - started_at)
-- Inlined into the caller's query, so the window bound reaches the index scan as a constant.
CREATE FUNCTION task_stats(span interval)
RETURNS TABLE (
    task text,
    finished bigint,
    succeeded bigint,
    dead bigint,
    cancelled bigint,
    per_second double precision,
    failure_rate double precision,
    retries bigint,
    p50_seconds double precision,
    p95_seconds double precision,
    p99_seconds double precision,
    max_seconds double precision
)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.task, s.finished, s.succeeded, s.dead, s.cancelled,
           s.finished / greatest(extract(epoch FROM span)::float8, 1e-9),
           s.dead::float8 / nullif(s.succeeded + s.dead, 0),
           s.retries, s.p[1], s.p[2], s.p[3], s.max_seconds
    FROM (
        SELECT h.task,
               count(*) AS finished,
               count(*) FILTER (WHERE h.state = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE h.state = 'dead') AS dead,
               count(*) FILTER (WHERE h.state = 'cancelled') AS cancelled,
               coalesce(sum(h.attempt - 1) FILTER (WHERE h.state <> 'cancelled'), 0)::bigint
                   AS retries,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM h.finished_at - h.started_at)::float8)
                   FILTER (WHERE h.state <> 'cancelled' AND h.started_at IS NOT NULL) AS p,
               max(extract(epoch FROM h.finished_at - h.started_at)::float8)
                   FILTER (WHERE h.state <> 'cancelled') AS max_seconds
        FROM job_history h
        WHERE h.finished_at > now() - span
        GROUP BY h.task
    ) s;
END;

-- task_stats over the last 5 minutes, hour and day; `period` is '5m', '1h' or '24h'.
-- Filter on it (WHERE period = '5m'): the other periods are then not computed at all.
CREATE VIEW task_window_stats AS
SELECT '5m'::text AS period, s.* FROM task_stats(interval '5 minutes') s
UNION ALL
SELECT '1h'::text, s.* FROM task_stats(interval '1 hour') s
UNION ALL
SELECT '24h'::text, s.* FROM task_stats(interval '24 hours') s;

-- Running jobs with the worker process that runs them. host and pid are NULL when the
-- worker is gone (its jobs are rescued within seconds).
CREATE VIEW running_jobs AS
SELECT j.id, j.task, j.queue, j.attempt, j.max_attempts, j.worker_id, w.host, w.pid,
       j.started_at, now() - j.started_at AS runtime, j.args, j.kwargs
FROM jobs j
LEFT JOIN workers w ON w.id = j.worker_id
WHERE j.state = 'running';

-- Live worker processes: last heartbeat, its age and how many jobs each is running.
CREATE VIEW worker_status AS
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, coalesce(r.running, 0) AS running,
       w.started_at, w.heartbeat_at, now() - w.heartbeat_at AS heartbeat_age
FROM workers w
LEFT JOIN (
    SELECT jobs.worker_id, count(*) AS running
    FROM jobs
    WHERE jobs.state = 'running'
    GROUP BY jobs.worker_id
) r ON r.worker_id = w.id;

-- Dead jobs with their last error record (kind: exception, timeout, discard, ...).
CREATE VIEW dead_jobs AS
SELECT h.id, h.task, h.queue, h.attempt, h.max_attempts, h.enqueued_at, h.finished_at,
       h.errors -> -1 ->> 'kind' AS last_error_kind,
       h.errors -> -1 ->> 'error' AS last_error,
       h.args, h.kwargs, h.dedup_key
FROM job_history h
WHERE h.state = 'dead';
