-- pgjobs least-privilege roles: a producer that can only enqueue, and a worker that can
-- run jobs (claim, ack, retry, rescue, prune, heartbeat, LISTEN, advisory locks, cron)
-- but can drop, alter, truncate or create nothing.
--
-- Run it with psql as the schema's owner (the role that ran `pgjobs migrate`) or a
-- superuser, after `pgjobs migrate`, and again after each upgrade of pgjobs (new versions
-- may add tables); it is idempotent:
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
-- The worker role is also a member of the producer role: handlers enqueue follow-up jobs
-- and the cron leader enqueues ticks.
--
-- Why these grants: pgjobs.enqueue() runs with its caller's rights (it is not SECURITY
-- DEFINER), so enqueueing needs INSERT on jobs, the sequence for the id, and SELECT on the
-- two columns enqueue reads back (id, dedup_key: `RETURNING id` and the dedup lookup); the
-- insert trigger adds new queues to `queues`. COPY (enqueue_many) needs the same INSERT.
-- A producer cannot read job arguments, claim, change or delete jobs, or read history.
--
-- Admin only (no grant here): migrations (except the worker's SELECT of the version),
-- and changing queues.paused, schedules' operator columns or dead jobs, i.e. what
-- `pgjobs queues|cron|jobs` commands do: run those as the owner, or grant them separately.
-- Monitoring views (queue_stats, task_window_stats, running_jobs, worker_status, dead_jobs,
-- cron_history) and task_stats(): grant SELECT / EXECUTE to whoever watches.

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

-- producer: enqueue only --------------------------------------------------------------
GRANT USAGE ON SCHEMA :"schema" TO :"producer_role";
GRANT EXECUTE ON FUNCTION :"schema".enqueue(text, jsonb, jsonb, text, integer, timestamptz,
    text, integer) TO :"producer_role";
GRANT INSERT ON :"schema".jobs TO :"producer_role";
GRANT SELECT (id, dedup_key) ON :"schema".jobs TO :"producer_role";
GRANT USAGE ON SEQUENCE :"schema".job_id_seq TO :"producer_role";
GRANT INSERT ON :"schema".queues TO :"producer_role";

-- worker: run jobs -----------------------------------------------------------------------
GRANT :"producer_role" TO :"worker_role";
GRANT USAGE ON SCHEMA :"schema" TO :"worker_role";
-- claim, ack, retry, bury, hand back, rescue, audit
GRANT SELECT, UPDATE, DELETE ON :"schema".jobs TO :"worker_role";
-- acks move finished jobs here; the pruner deletes old ones (its SELECT ... FOR UPDATE SKIP
-- LOCKED needs UPDATE on one column)
GRANT SELECT, INSERT, DELETE ON :"schema".job_history TO :"worker_role";
GRANT UPDATE (finished_at) ON :"schema".job_history TO :"worker_role";
-- which queues exist and are not paused
GRANT SELECT ON :"schema".queues TO :"worker_role";
-- register (or take an id back), heartbeat, unregister; rescuers mark lost workers and
-- remove them after their grace
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".workers TO :"worker_role";
GRANT USAGE ON SEQUENCE :"schema".worker_id_seq TO :"worker_role";
-- the schema version, checked at start
GRANT SELECT ON :"schema".migrations TO :"worker_role";
-- cron: every worker registers the code's schedules; the leader fires, records, prunes
GRANT SELECT, INSERT, UPDATE ON :"schema".schedules TO :"worker_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".cron_runs TO :"worker_role";
-- queue depth for the worker's metrics endpoint
GRANT SELECT ON :"schema".queue_stats TO :"worker_role";

COMMIT;
