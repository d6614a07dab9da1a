-- pgjobs schema, version 4: a worker that loses its session gets a grace period.
-- A worker whose liveness lock is gone may only have lost its connection while its handlers
-- still run. The first rescuer to notice stamps lost_at; the worker's running jobs are
-- rescued only once rescue_grace has passed since then. A worker that gets its lock back
-- within the grace clears lost_at and keeps its jobs; one that cannot stops its handlers
-- (or exits) before the grace ends, so a job never runs twice at the same time.
ALTER TABLE workers
    ADD COLUMN lost_at timestamptz,
    ADD COLUMN rescue_grace interval NOT NULL DEFAULT interval '5 seconds';

-- Same columns as version 3, plus lost_at: set while the worker's lock is gone.
CREATE OR REPLACE VIEW worker_status AS
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, coalesce(r.running, 0) AS running,
       w.started_at, w.heartbeat_at, now() - w.heartbeat_at AS heartbeat_age, w.lost_at
FROM workers w
LEFT JOIN (
    SELECT jobs.worker_id, count(*) AS running
    FROM jobs
    WHERE jobs.state = 'running'
    GROUP BY jobs.worker_id
) r ON r.worker_id = w.id;
