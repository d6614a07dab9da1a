-- pgjobs schema, version 1.
-- Runs with search_path set to the target schema; every object below lands there.
-- Functions capture that search_path (SET search_path FROM CURRENT) so they keep
-- working whatever the caller's search_path is.

-- The job state machine (mirrored by pgjobs.states.JobState):
--   queued  -> running                  claim
--   running -> succeeded                handler returned
--   running -> queued                   handler failed with attempts left, worker lost, shutdown hand-back
--   running -> dead                     attempts exhausted, Discard, unknown task
--   queued  -> cancelled                operator cancel
--   dead|cancelled -> queued            operator retry
-- queued and running rows live in the hot table `jobs`; finished rows move to `job_history`.
CREATE TYPE job_state AS ENUM ('queued', 'running', 'succeeded', 'dead', 'cancelled');

CREATE TABLE queues (
    name        text PRIMARY KEY CHECK (name <> '' AND length(name) <= 200),
    paused      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE job_id_seq AS bigint;

CREATE TABLE jobs (
    id            bigint PRIMARY KEY DEFAULT nextval('job_id_seq'),
    task          text NOT NULL CHECK (task <> '' AND length(task) <= 200),
    queue         text NOT NULL DEFAULT 'default' CHECK (queue <> '' AND length(queue) <= 200),
    args          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(args) = 'array'),
    kwargs        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(kwargs) = 'object'),
    priority      integer NOT NULL DEFAULT 0,
    state         job_state NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running')),
    attempt       integer NOT NULL DEFAULT 0,
    max_attempts  integer CHECK (max_attempts >= 1),
    run_at        timestamptz NOT NULL DEFAULT now(),
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    worker_id     bigint,
    dedup_key     text,
    errors        jsonb NOT NULL DEFAULT '[]'
);
ALTER SEQUENCE job_id_seq OWNED BY jobs.id;

-- Matches the claim predicate and order exactly, so a claim reads only the rows it takes.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_running_idx ON jobs (worker_id) WHERE state = 'running';
-- At most one unfinished job per dedup key (finished jobs have left this table); rows
-- without a key stay out of the index.
CREATE UNIQUE INDEX jobs_dedup_key_idx ON jobs (dedup_key) WHERE dedup_key IS NOT NULL;

CREATE TABLE job_history (
    id            bigint PRIMARY KEY,
    task          text NOT NULL,
    queue         text NOT NULL,
    args          jsonb NOT NULL,
    kwargs        jsonb NOT NULL,
    priority      integer NOT NULL,
    state         job_state NOT NULL CHECK (state IN ('succeeded', 'dead', 'cancelled')),
    attempt       integer NOT NULL,
    max_attempts  integer,
    run_at        timestamptz NOT NULL,
    enqueued_at   timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    worker_id     bigint,
    dedup_key     text,
    errors        jsonb NOT NULL
);
-- Rows arrive in finished_at order, so a BRIN index serves pruning and recent-window
-- scans at almost no insert cost.
CREATE INDEX job_history_finished_brin ON job_history USING brin (finished_at);
CREATE INDEX job_history_dead_idx ON job_history (finished_at) WHERE state = 'dead';

CREATE SEQUENCE worker_id_seq AS bigint MAXVALUE 4294967295 CYCLE;

CREATE TABLE workers (
    id            bigint PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    queues        text[],
    concurrency   integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- One statement-level trigger: registers new queues and wakes listening workers with at
-- most one NOTIFY per queue per statement (Postgres folds repeats within a transaction).
CREATE FUNCTION jobs_after_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO queues (name) SELECT DISTINCT n.queue FROM new_jobs n ON CONFLICT DO NOTHING;
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.jobs', d.queue)
       FROM (SELECT DISTINCT n.queue FROM new_jobs n WHERE n.run_at <= now()) d;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_after_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_after_insert();

-- The one enqueue path, for Python and for SQL callers (triggers, other languages).
-- A dedup_key that an unfinished job already holds returns that job's id.
CREATE FUNCTION enqueue(
    task          text,
    args          jsonb DEFAULT '[]',
    kwargs        jsonb DEFAULT '{}',
    queue         text DEFAULT 'default',
    priority      integer DEFAULT 0,
    run_at        timestamptz DEFAULT now(),
    dedup_key     text DEFAULT NULL,
    max_attempts  integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    job_id bigint;
BEGIN
    LOOP
        INSERT INTO jobs (task, args, kwargs, queue, priority, run_at, dedup_key, max_attempts)
        VALUES (enqueue.task, coalesce(enqueue.args, '[]'), coalesce(enqueue.kwargs, '{}'),
                coalesce(enqueue.queue, 'default'), coalesce(enqueue.priority, 0),
                coalesce(enqueue.run_at, now()), enqueue.dedup_key, enqueue.max_attempts)
        ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
        RETURNING id INTO job_id;
        IF job_id IS NOT NULL THEN
            RETURN job_id;
        END IF;
        SELECT j.id INTO job_id FROM jobs j WHERE j.dedup_key = enqueue.dedup_key;
        IF job_id IS NOT NULL THEN
            RETURN job_id;
        END IF;
        -- The holder finished between the two statements: try the insert again.
    END LOOP;
END $$;
