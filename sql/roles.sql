-- pgjobs least-privilege roles: a producer that can only enqueue, and a worker that can
-- run jobs (claim, ack, retry, rescue, prune, heartbeat, LISTEN, advisory locks, cron)
-- but can drop, alter, truncate or create nothing.
--
-- Run it with psql as the schema's owner (the role that ran `pgjobs migrate`) or a
-- superuser, after `pgjobs migrate`, and again after each upgrade of pgjobs (new versions
-- may add tables, and take back grants that older versions of this file made); it is
-- idempotent:
--
--     psql "$ADMIN_DSN" -v schema=pgjobs -f sql/roles.sql
--
-- Variables (all optional): schema (default pgjobs), producer_role (default
-- pgjobs_producer), worker_role (default pgjobs_worker). The two roles are NOLOGIN group
-- roles, created if missing; give them to your login roles:
--
--     CREATE ROLE web LOGIN PASSWORD '...' IN ROLE pgjobs_producer;
--     CREATE ROLE jobs_worker LOGIN PASSWORD '...' IN ROLE pgjobs_worker;
--
-- The worker role is also a member of the producer role: handlers enqueue follow-up jobs.
--
-- Why these grants: producers hold no privilege on any table or sequence. They enqueue
-- through pgjobs.enqueue() and pgjobs.enqueue_many(), which are SECURITY DEFINER (they run
-- with the schema owner's rights, with a fixed search_path) and EXECUTE-able only by the
-- roles granted here. So a producer cannot write a row those functions would not write (an
-- id taken ahead of the sequence that a later job collides with, a 'running' state, an
-- oversized value), and cannot read any job: not other producers' arguments, not their
-- dedup keys (enqueue's dedup lookup runs with the owner's rights and returns only an id).
-- Nor can it claim, change or delete jobs, read history, or take the migrations lock.
--
-- The worker writes jobs directly (claim, ack, retry, rescue) and the cron leader inserts
-- tick jobs with ids from the sequence (hence INSERT on jobs and the sequence, and INSERT
-- on queues for the insert trigger, which runs with the inserting role's rights). On
-- `schedules` it gets column grants: every worker registers the code-owned columns of the
-- schedules in its code (task .. code_timezone, armed_at, registered_at, seen_at,
-- removed_at, revision) and the leader its progress (next_tick, last_tick); the operator
-- columns (enabled, override_expression, override_timezone, updated_at, updated_by) are
-- the owner's alone, so a worker cannot enable, disable or re-time a schedule.
--
-- Admin only (no grant here): migrations (except the worker's SELECT of the version),
-- and changing queues.paused, schedules' operator columns or dead jobs, i.e. what
-- `pgjobs queues|cron|jobs` commands do: run those as the owner, or grant them separately.
-- Monitoring views (queue_stats, task_window_stats, running_jobs, worker_status, dead_jobs,
-- cron_history) and task_stats(): grant SELECT / EXECUTE to whoever watches. The worker
-- reads queue_stats (its metrics endpoint) and cron_leader (the cron election).
-- The enqueue functions' input checks (check_job_fields, json_over_limits,
-- raise_json_limit) need no grant: they run inside the definer functions, and are pure.

\set ON_ERROR_STOP on
\if :{?schema}
\else
\set schema pgjobs
\endif
\if :{?producer_role}
\else
\set producer_role pgjobs_producer
\endif
\if :{?worker_role}
\else
\set worker_role pgjobs_worker
\endif

SELECT format('CREATE ROLE %I NOLOGIN', :'producer_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'producer_role') \gexec
SELECT format('CREATE ROLE %I NOLOGIN', :'worker_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'worker_role') \gexec

BEGIN;

-- Upgrades: take back what older versions of this file granted (a table-level REVOKE also
-- takes back the column grants on that table); what is still needed is granted below.
REVOKE INSERT, SELECT ON :"schema".jobs FROM :"producer_role";
REVOKE USAGE ON SEQUENCE :"schema".job_id_seq FROM :"producer_role";
REVOKE INSERT ON :"schema".queues FROM :"producer_role";
REVOKE INSERT, UPDATE ON :"schema".schedules FROM :"worker_role";

-- producer: enqueue only --------------------------------------------------------------
GRANT USAGE ON SCHEMA :"schema" TO :"producer_role";
GRANT EXECUTE ON FUNCTION :"schema".enqueue(text, jsonb, jsonb, text, integer, timestamptz,
    text, integer) TO :"producer_role";
GRANT EXECUTE ON FUNCTION :"schema".enqueue_many(text, jsonb[], text, integer, timestamptz,
    integer) TO :"producer_role";

-- worker: run jobs -----------------------------------------------------------------------
GRANT :"producer_role" TO :"worker_role";
GRANT USAGE ON SCHEMA :"schema" TO :"worker_role";
-- claim, ack, retry, bury, hand back, rescue, audit
GRANT SELECT, UPDATE, DELETE ON :"schema".jobs TO :"worker_role";
-- the cron leader's tick jobs (cron_fire), ids from the sequence; the insert trigger
-- registers their queues
GRANT INSERT (id, task, queue, kwargs, priority, max_attempts) ON :"schema".jobs
    TO :"worker_role";
GRANT USAGE ON SEQUENCE :"schema".job_id_seq TO :"worker_role";
-- which queues exist and are not paused
GRANT SELECT, INSERT ON :"schema".queues TO :"worker_role";
-- acks move finished jobs here (overwriting a stray row of the same id: ON CONFLICT DO
-- UPDATE); the pruner deletes old ones (SELECT ... FOR UPDATE SKIP LOCKED)
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".job_history TO :"worker_role";
-- register (or take an id back), heartbeat, unregister; rescuers mark lost workers and
-- remove them after their grace
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".workers TO :"worker_role";
GRANT USAGE ON SEQUENCE :"schema".worker_id_seq TO :"worker_role";
-- the lowest worker protocol, read by the trigger on workers
GRANT SELECT ON :"schema".compatibility TO :"worker_role";
-- the schema version, checked at start
GRANT SELECT ON :"schema".migrations TO :"worker_role";
-- cron: every worker registers the code's schedules (code-owned columns only); the leader
-- fires, records, prunes, and holds the election
GRANT SELECT ON :"schema".schedules TO :"worker_role";
GRANT INSERT (name, task, queue, priority, max_attempts, kwargs, missed, code_expression,
    code_timezone, armed_at, registered_at, seen_at) ON :"schema".schedules TO :"worker_role";
GRANT UPDATE (task, queue, priority, max_attempts, kwargs, missed, code_expression,
    code_timezone, armed_at, seen_at, removed_at, revision, next_tick, last_tick)
    ON :"schema".schedules TO :"worker_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".cron_runs TO :"worker_role";
GRANT SELECT, UPDATE ON :"schema".cron_election TO :"worker_role";
GRANT SELECT ON :"schema".cron_leader TO :"worker_role";
-- queue depth for the worker's metrics endpoint
GRANT SELECT ON :"schema".queue_stats TO :"worker_role";

COMMIT;
