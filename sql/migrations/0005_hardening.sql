-- pgjobs schema, version 5: the hardening of issue 10 (fencing by run, the lowest worker
-- protocol a schema accepts, verified lock holders, input limits, narrow producer rights,
-- database time for every shared decision).

-- == section: workers and fencing ==
-- Any role can take any advisory lock, so a lock proves a worker alive only when the backend
-- holding it is the one the worker registered: each worker records its session's backend pid
-- (and its lock namespace, for the views). Rows of workers older than protocol 2 have no pid
-- and keep the old rule (any holder counts) until they are gone.
ALTER TABLE workers
    ADD COLUMN session_pid integer,
    ADD COLUMN lock_namespace integer,
    ADD COLUMN protocol integer NOT NULL DEFAULT 1;

-- The lowest worker protocol this schema accepts. A worker speaking an older protocol can
-- neither register nor heartbeat (the trigger below), so it stops claiming within one
-- heartbeat and exits; an upgrade that changes what workers must agree on raises it.
CREATE TABLE compatibility (
    only_row            boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    min_worker_protocol integer NOT NULL
);
INSERT INTO compatibility (min_worker_protocol) VALUES (2);

CREATE FUNCTION workers_check_protocol() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    lowest integer := (SELECT min_worker_protocol FROM compatibility);
BEGIN
    IF NEW.protocol < lowest THEN
        RAISE EXCEPTION 'pgjobs worker % speaks protocol %, older than this schema accepts (%)',
            NEW.id, NEW.protocol, lowest
            USING ERRCODE = 'PJ001', HINT = 'upgrade pgjobs on this host and restart the worker';
    END IF;
    RETURN NEW;
END $$;

-- Registering and heartbeating are checked; rescuers' writes (lost_at) are not.
CREATE TRIGGER workers_check_protocol BEFORE INSERT OR UPDATE OF heartbeat_at ON workers
    FOR EACH ROW EXECUTE FUNCTION workers_check_protocol();

-- Same columns as version 4, plus: session_pid (the worker's registered session backend),
-- lock_holder_pid (the backend holding its lock, if any) and session: live (held by its own
-- session), lost (held by nobody) or foreign (held by another backend: spoofed or stale).
CREATE OR REPLACE VIEW worker_status AS
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, coalesce(r.running, 0) AS running,
       w.started_at, w.heartbeat_at, now() - w.heartbeat_at AS heartbeat_age, w.lost_at,
       w.session_pid, l.pid AS lock_holder_pid,
       CASE WHEN l.pid IS NULL THEN 'lost'
            WHEN w.session_pid IS NULL OR l.pid = w.session_pid THEN 'live'
            ELSE 'foreign' END AS session,
       w.protocol
FROM workers w
LEFT JOIN LATERAL (
    SELECT k.pid FROM pg_locks k
    WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
      AND k.classid = w.lock_namespace::oid AND k.objid = w.id::oid
      AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    LIMIT 1
) l ON true
LEFT JOIN (
    SELECT jobs.worker_id, count(*) AS running
    FROM jobs
    WHERE jobs.state = 'running'
    GROUP BY jobs.worker_id
) r ON r.worker_id = w.id;

-- == section: input limits ==
-- enqueue refuses, with SQLSTATE 22023 (invalid_parameter_value) and a message naming the
-- field and the limit, what the Python API refuses before any I/O (pgjobs/limits.py; the
-- README's "Input limits"): names empty, over 200 characters or holding control characters
-- (C0, DEL, C1, bidirectional controls, line/paragraph separators); max_attempts below 1;
-- a dedup_key over 512 bytes; args that is not an array, kwargs not an object; arrays or
-- objects nested more than 100 deep inside one argument; a number of 10^4300 or more in
-- magnitude (more than 4,300 digits: Python, and so the worker, cannot read it). NUL and
-- lone surrogates cannot reach a text or jsonb value at all. Same signature as version 1.
-- Raise 22023 naming the first of a job's fields that breaks a limit.
CREATE FUNCTION check_job_fields(task text, queue text, max_attempts integer, dedup_key text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path FROM CURRENT AS $$
BEGIN
    IF task IS NULL OR length(task) > 200 OR btrim(task) = '' THEN
        RAISE EXCEPTION 'task name must be a non-empty string of at most 200 characters'
            USING ERRCODE = '22023';
    END IF;
    IF length(queue) > 200 OR btrim(queue) = '' THEN
        RAISE EXCEPTION 'queue name must be a non-empty string of at most 200 characters'
            USING ERRCODE = '22023';
    END IF;
    IF task ~ '[\u0001-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]' THEN
        RAISE EXCEPTION 'task name must not contain control characters' USING ERRCODE = '22023';
    END IF;
    IF queue ~ '[\u0001-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]' THEN
        RAISE EXCEPTION 'queue name must not contain control characters' USING ERRCODE = '22023';
    END IF;
    IF max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be >= 1, got %', max_attempts USING ERRCODE = '22023';
    END IF;
    IF octet_length(dedup_key) > 512 THEN
        RAISE EXCEPTION 'dedup_key is % bytes, over the limit of 512', octet_length(dedup_key)
            USING ERRCODE = '22023';
    END IF;
END $$;

-- Whether one argument value (a job's args or kwargs) breaks the JSON limits: one walk.
-- Level 1 holds the arguments, so a container at level 101 nests 101 deep inside one.
CREATE FUNCTION json_over_limits(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE RETURN jsonb_path_match(value,
    'strict exists($.**{101} ? (@.type() == "array" || @.type() == "object"))
            || exists($.** ? (@ >= 1e4300 || @ <= -1e4300))');

-- Raise 22023 saying which JSON limit `value` (named `label`, item `item` of a batch when
-- given) breaks; call it only when json_over_limits(value).
CREATE FUNCTION raise_json_limit(label text, value jsonb, item bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    which text := CASE WHEN item IS NULL THEN '' ELSE format('; item %s', item) END;
BEGIN
    IF jsonb_path_exists(value, 'strict $.**{101} ? (@.type() == "array" || @.type() == "object")') THEN
        RAISE EXCEPTION '% nest deeper than 100 levels of arrays/objects (the limit%)', label, which
            USING ERRCODE = '22023';
    END IF;
    RAISE EXCEPTION '% hold a number of more than 4,300 digits (the limit%)', label, which
        USING ERRCODE = '22023';
END $$;

CREATE OR REPLACE FUNCTION enqueue(
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
    -- One test for the usual valid call; check_job_fields says what is wrong.
    IF enqueue.task IS NULL OR length(enqueue.task) > 200 OR btrim(enqueue.task) = ''
       OR length(enqueue.queue) > 200 OR btrim(enqueue.queue) = ''
       OR enqueue.task || coalesce(enqueue.queue, '') ~ '[\u0001-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]'
       OR enqueue.max_attempts < 1 OR octet_length(enqueue.dedup_key) > 512
       OR jsonb_typeof(enqueue.args) <> 'array' OR jsonb_typeof(enqueue.kwargs) <> 'object'
    THEN
        PERFORM check_job_fields(enqueue.task, enqueue.queue, enqueue.max_attempts,
                                 enqueue.dedup_key);
        IF jsonb_typeof(enqueue.args) <> 'array' THEN
            RAISE EXCEPTION 'args must be a JSON array' USING ERRCODE = '22023';
        END IF;
        RAISE EXCEPTION 'kwargs must be a JSON object' USING ERRCODE = '22023';
    END IF;
    -- One walk per value, none for the usual empty one.
    IF enqueue.args <> '[]' AND json_over_limits(enqueue.args) THEN
        PERFORM raise_json_limit('args', enqueue.args);
    END IF;
    IF enqueue.kwargs <> '{}' AND json_over_limits(enqueue.kwargs) THEN
        PERFORM raise_json_limit('kwargs', enqueue.kwargs);
    END IF;
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

-- == section: producer rights ==
-- Producers enqueue through functions that run with the schema owner's rights (SECURITY
-- DEFINER) and hold no privilege on the tables: they cannot write a row the functions would
-- not (a forged id ahead of the sequence, a 'running' state) nor read other producers' jobs.
-- Definer functions get a fixed search_path (pg_temp last, so a caller's temporary table
-- cannot stand in for a pgjobs one) and are executable only by the roles of sql/roles.sql.

-- Many jobs of one task in one statement (`enqueue_many`): one job per kwargs element, ids
-- from the sequence in element order, returned in that order. No dedup_key (enqueue those
-- one by one). One NOTIFY per queue per statement, like enqueue (the insert trigger). The
-- same input limits as enqueue (section "input limits"), with the same messages; a bad
-- element names its position (1-based).
CREATE FUNCTION enqueue_many(
    task          text,
    kwargs        jsonb[],
    queue         text DEFAULT 'default',
    priority      integer DEFAULT 0,
    run_at        timestamptz DEFAULT now(),
    max_attempts  integer DEFAULT NULL
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
    bad jsonb;
    bad_item bigint;
BEGIN
    PERFORM check_job_fields(enqueue_many.task, enqueue_many.queue, enqueue_many.max_attempts,
                             NULL);
    -- One pass finds the first bad element (a walk only for non-empty kwargs); then say why.
    SELECT k.kwargs, k.n INTO bad, bad_item
    FROM unnest(enqueue_many.kwargs) WITH ORDINALITY AS k(kwargs, n)
    WHERE jsonb_typeof(k.kwargs) <> 'object' OR (k.kwargs <> '{}' AND json_over_limits(k.kwargs))
    ORDER BY k.n LIMIT 1;
    IF bad_item IS NOT NULL THEN
        IF jsonb_typeof(bad) <> 'object' THEN
            RAISE EXCEPTION 'kwargs must be a JSON object (item %)', bad_item
                USING ERRCODE = '22023';
        END IF;
        PERFORM raise_json_limit('kwargs', bad, bad_item);
    END IF;
    ids := array(SELECT nextval('job_id_seq') FROM generate_series(1, cardinality(enqueue_many.kwargs)));
    INSERT INTO jobs (id, task, queue, args, kwargs, priority, run_at, max_attempts)
    SELECT ids[k.n], enqueue_many.task, coalesce(enqueue_many.queue, 'default'), '[]',
           coalesce(k.kwargs, '{}'), coalesce(enqueue_many.priority, 0),
           coalesce(enqueue_many.run_at, now()), enqueue_many.max_attempts
    FROM unnest(enqueue_many.kwargs) WITH ORDINALITY AS k(kwargs, n);
    RETURN ids;
END $$;

DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION enqueue(text, jsonb, jsonb, text, integer, timestamptz, '
                   'text, integer) SECURITY DEFINER SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION enqueue_many(text, jsonb[], text, integer, timestamptz, '
                   'integer) SECURITY DEFINER SET search_path = %s', path);
    -- The insert trigger runs with the definer's rights under these functions.
    EXECUTE format('ALTER FUNCTION jobs_after_insert() SET search_path = %s', path);
END $$;
REVOKE EXECUTE ON FUNCTION enqueue(text, jsonb, jsonb, text, integer, timestamptz, text, integer)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION enqueue_many(text, jsonb[], text, integer, timestamptz, integer)
    FROM PUBLIC;


-- == section: clocks and elections ==
-- The cron leader is the holder of a session advisory lock whose key is kept here, not
-- fixed: any role can take any advisory key, and a foreign holder of a fixed key would stop
-- every tick. Candidates decide while holding this row's lock: a candidate that gets the
-- key records its backend pid (leader_pid); one that finds the key held by any other
-- backend moves the election to a fresh random key (moved_at, moved_from say from whom).
-- Only the worker role reads or writes it (sql/roles.sql).
CREATE TABLE cron_election (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row
    lock_key    bigint,                -- NULL until the first candidate picks one
    leader_pid  integer,               -- backend holding lock_key for the leader
    leader      text,                  -- the leading process, host:pid
    elected_at  timestamptz,
    moved_at    timestamptz,
    moved_from  text                   -- the foreign holder the key was moved away from
);
INSERT INTO cron_election DEFAULT VALUES;

-- Who leads: 'leader' (a trusted holder), 'none', or 'foreign' (a backend that no
-- candidate elected holds the key; the next candidate moves the election away from it).
CREATE VIEW cron_leader AS
SELECT CASE WHEN l.pid IS NULL THEN 'none'
            WHEN l.pid = e.leader_pid THEN 'leader'
            ELSE 'foreign' END AS status,
       CASE WHEN l.pid = e.leader_pid THEN e.leader END AS leader,
       l.pid AS holder_pid, a.usename::text AS holder_role,
       a.application_name AS holder_application,
       e.elected_at, e.moved_at, e.moved_from
FROM cron_election e
LEFT JOIN pg_locks l
       ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.classid = (e.lock_key >> 32)::oid AND l.objid = (e.lock_key & 4294967295)::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN pg_stat_activity a ON a.pid = l.pid;
