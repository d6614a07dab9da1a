-- pgjobs schema, version 2: cron and interval schedules.
-- Runs with search_path set to the target schema.
--
-- Ownership of a schedule's columns:
--   code      task, queue, priority, max_attempts, kwargs, missed, code_expression,
--             code_timezone: rewritten by every worker that starts with the schedule in
--             its code (pgjobs.cron.scheduler registers them).
--   operator  enabled, override_expression, override_timezone (NULL: follow the code),
--             updated_at, updated_by: written only by the admin API / `pgjobs cron`, so an
--             operator's change survives any number of deploys.
--   leader    next_tick, last_tick: the elected scheduler's progress.
-- A schedule missing from the code of a starting worker gets removed_at and stops firing;
-- its row and its runs are kept.
-- Any change to the timing or enabled state bumps `revision` and, when the timing changed,
-- clears next_tick: the leader recomputes it from armed_at (ticks at or before armed_at
-- never fire), and refuses to fire a tick it planned under an older revision.

CREATE TABLE schedules (
    name                 text PRIMARY KEY CHECK (name <> '' AND length(name) <= 200),
    task                 text NOT NULL CHECK (task <> '' AND length(task) <= 200),
    queue                text NOT NULL CHECK (queue <> '' AND length(queue) <= 200),
    priority             integer NOT NULL DEFAULT 0,
    max_attempts         integer CHECK (max_attempts >= 1),
    kwargs               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(kwargs) = 'object'),
    missed               text NOT NULL DEFAULT 'latest'
                         CHECK (missed IN ('latest', 'skip', 'all')),
    code_expression      text NOT NULL,
    code_timezone        text NOT NULL DEFAULT 'UTC',
    override_expression  text,
    override_timezone    text,
    expression           text NOT NULL
                         GENERATED ALWAYS AS (coalesce(override_expression, code_expression)) STORED,
    timezone             text NOT NULL
                         GENERATED ALWAYS AS (coalesce(override_timezone, code_timezone)) STORED,
    enabled              boolean NOT NULL DEFAULT true,
    revision             bigint NOT NULL DEFAULT 1,
    armed_at             timestamptz NOT NULL DEFAULT now(),
    next_tick            timestamptz,
    last_tick            timestamptz,
    registered_at        timestamptz NOT NULL DEFAULT now(),
    seen_at              timestamptz NOT NULL DEFAULT now(),
    removed_at           timestamptz,
    updated_at           timestamptz,
    updated_by           text,
    -- The shape only (Python validates fully before storing): a 5- or 6-field cron
    -- expression, an alias, or "@every" with a d/h/m/s duration, single-spaced.
    CONSTRAINT schedules_code_expression_shape CHECK (code_expression ~
        '^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every ([0-9]+[dhms])+|[0-9A-Za-z*/,#?-]+( [0-9A-Za-z*/,#?-]+){4,5})$'),
    CONSTRAINT schedules_override_expression_shape CHECK (override_expression ~
        '^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every ([0-9]+[dhms])+|[0-9A-Za-z*/,#?-]+( [0-9A-Za-z*/,#?-]+){4,5})$'),
    CONSTRAINT schedules_timezone_shape CHECK (
        code_timezone ~ '^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$' AND length(code_timezone) <= 100
        AND (override_timezone IS NULL OR (
            override_timezone ~ '^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$'
            AND length(override_timezone) <= 100)))
);

-- One row per run of a schedule: each tick the leader enqueued, each manual trigger. The
-- run and its job are inserted by one statement; UNIQUE (schedule, tick_at) refuses a
-- second job for a tick however many leaders overlap (manual runs have no tick: NULL).
-- state..finished_at are copied from job_history once the job finishes, so a schedule's
-- history outlives the pruning of finished jobs.
CREATE TABLE cron_runs (
    job_id        bigint PRIMARY KEY,
    schedule      text NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    tick_at       timestamptz,
    trigger       text NOT NULL CHECK (trigger IN ('schedule', 'operator', 'api')),
    triggered_by  text,
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    state         job_state CHECK (state IN ('succeeded', 'dead', 'cancelled')),
    attempts      integer,
    started_at    timestamptz,
    finished_at   timestamptz,
    CONSTRAINT cron_runs_one_job_per_tick UNIQUE (schedule, tick_at),
    CONSTRAINT cron_runs_tick_iff_scheduled CHECK ((trigger = 'schedule') = (tick_at IS NOT NULL))
);
CREATE INDEX cron_runs_schedule_idx ON cron_runs (schedule, job_id);
-- The runs whose outcome is not recorded yet: few rows, read by every leader pass.
CREATE INDEX cron_runs_unfinished_idx ON cron_runs (schedule) WHERE finished_at IS NULL;
-- enqueued_at is the clock of whoever made the run (the leader, an admin); rows arrive
-- in its order, so BRIN serves pruning at almost no insert cost.
CREATE INDEX cron_runs_enqueued_brin ON cron_runs USING brin (enqueued_at);

-- Each run with its job's live state: from `jobs` while queued or running, else from
-- `job_history`, else as recorded in cron_runs (after pruning). A run whose job vanished
-- (deleted by hand) has a finished_at and no state.
CREATE VIEW cron_history AS
SELECT r.job_id, r.schedule, r.tick_at, r.trigger, r.triggered_by, r.enqueued_at,
       CASE WHEN j.id IS NOT NULL THEN j.state ELSE coalesce(h.state, r.state) END AS state,
       coalesce(j.attempt, h.attempt, r.attempts) AS attempts,
       coalesce(j.started_at, h.started_at, r.started_at) AS started_at,
       CASE WHEN j.id IS NULL THEN coalesce(h.finished_at, r.finished_at) END AS finished_at,
       coalesce(j.errors, h.errors) -> -1 ->> 'error' AS last_error
FROM cron_runs r
LEFT JOIN jobs j ON j.id = r.job_id
LEFT JOIN job_history h ON h.id = r.job_id;
