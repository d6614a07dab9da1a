"""The SQL enqueue API (`pgjobs.enqueue(...)`), for triggers and other languages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgjobs

WAIT = 30.0  # upper bound for waiting on a notification; never an assertion on speed


def _sql_enqueue(db: psycopg.Connection[Any], call: str, *params: Any) -> int:
    row = db.execute(f"SELECT pgjobs.enqueue({call})", params).fetchone()
    assert row is not None
    assert type(row[0]) is int
    return row[0]


def _job(db: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT *, now() AS db_now FROM pgjobs.jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None, f"job {job_id} is not in pgjobs.jobs"
    return row


def _count(db: psycopg.Connection[Any], table: str = "pgjobs.jobs") -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_sql_enqueue_returns_an_id_and_applies_defaults(db: psycopg.Connection[Any]) -> None:
    job_id = _sql_enqueue(db, """task => 'send_email', kwargs => '{"a":1}'""")
    row = _job(db, job_id)
    assert row["task"] == "send_email"
    assert row["kwargs"] == {"a": 1}
    assert row["args"] == []
    assert row["queue"] == "default"
    assert row["priority"] == 0
    assert row["max_attempts"] is None
    assert row["dedup_key"] is None
    assert (row["state"], row["attempt"], row["errors"]) == ("queued", 0, [])
    assert row["run_at"] == row["enqueued_at"]
    assert abs(row["run_at"] - row["db_now"]) < timedelta(minutes=1)


def test_sql_enqueue_with_every_argument(db: psycopg.Connection[Any]) -> None:
    when = datetime(2032, 2, 3, 4, 5, 6, tzinfo=UTC)
    job_id = _sql_enqueue(
        db,
        "task => %s, args => %s::jsonb, kwargs => %s::jsonb, queue => %s, priority => %s,"
        " run_at => %s, dedup_key => %s, max_attempts => %s",
        "reports.build",
        "[1, 2]",
        '{"fmt": "pdf"}',
        "reports",
        -5,
        when,
        "report:1",
        7,
    )
    row = _job(db, job_id)
    assert (row["task"], row["args"], row["kwargs"], row["queue"]) == (
        "reports.build",
        [1, 2],
        {"fmt": "pdf"},
        "reports",
    )
    assert (row["priority"], row["run_at"], row["dedup_key"], row["max_attempts"]) == (
        -5,
        when,
        "report:1",
        7,
    )


def test_sql_enqueue_positional_call_and_explicit_nulls_fall_back_to_defaults(
    db: psycopg.Connection[Any],
) -> None:
    job_id = _sql_enqueue(db, "'positional', NULL, NULL, NULL, NULL, NULL, NULL, NULL")
    row = _job(db, job_id)
    assert (row["args"], row["kwargs"], row["queue"], row["priority"]) == ([], {}, "default", 0)
    assert row["run_at"] == row["enqueued_at"]


def test_sql_dedup_returns_the_existing_id(db: psycopg.Connection[Any]) -> None:
    first = _sql_enqueue(db, "task => 'welcome', args => '[1]', dedup_key => 'welcome:1'")
    again = _sql_enqueue(db, "task => 'welcome', args => '[2]', dedup_key => 'welcome:1'")
    other = _sql_enqueue(db, "task => 'welcome', dedup_key => 'welcome:2'")
    plain = [_sql_enqueue(db, "task => 'welcome'") for _ in range(2)]
    assert again == first
    assert len({first, other, *plain}) == 4  # NULL keys never collide
    assert _job(db, first)["args"] == [1]
    assert _count(db) == 4


def test_sql_dedup_is_shared_with_python(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    from_sql = _sql_enqueue(db, "task => 'welcome', dedup_key => 'shared'")
    assert app.enqueue("welcome", dedup_key="shared") == from_sql
    assert _count(db) == 1


def test_sql_dedup_after_the_holder_finished_makes_a_new_job(
    db: psycopg.Connection[Any],
) -> None:
    first = _sql_enqueue(db, "task => 'welcome', dedup_key => 'once'")
    # What a worker does on success: the row moves from jobs to job_history.
    db.execute(
        "WITH done AS (DELETE FROM pgjobs.jobs WHERE id = %s RETURNING *)"
        " INSERT INTO pgjobs.job_history (id, task, queue, args, kwargs, priority, state,"
        " attempt, max_attempts, run_at, enqueued_at, started_at, worker_id, dedup_key, errors)"
        " SELECT id, task, queue, args, kwargs, priority, 'succeeded', 1, max_attempts, run_at,"
        " enqueued_at, now(), worker_id, dedup_key, errors FROM done",
        (first,),
    )
    second = _sql_enqueue(db, "task => 'welcome', dedup_key => 'once'")
    assert second != first
    assert _job(db, second)["dedup_key"] == "once"


def test_the_trigger_registers_new_queues_once_and_keeps_them_paused(
    db: psycopg.Connection[Any],
) -> None:
    assert _count(db, "pgjobs.queues") == 0
    _sql_enqueue(db, "task => 't', queue => 'alpha'")
    _sql_enqueue(db, "task => 't', queue => 'alpha'")
    _sql_enqueue(db, "task => 't'")
    db.execute("UPDATE pgjobs.queues SET paused = true WHERE name = 'alpha'")
    _sql_enqueue(db, "task => 't', queue => 'alpha'")
    assert db.execute("SELECT name, paused FROM pgjobs.queues ORDER BY name").fetchall() == [
        ("alpha", True),
        ("default", False),
    ]


def test_a_plain_insert_also_registers_its_queues(db: psycopg.Connection[Any]) -> None:
    db.execute(
        "INSERT INTO pgjobs.jobs (task, queue) SELECT 't', 'q' || (g %% 3)"
        " FROM generate_series(1, 30) g",
        (),
    )
    assert db.execute("SELECT name FROM pgjobs.queues ORDER BY name").fetchall() == [
        ("q0",),
        ("q1",),
        ("q2",),
    ]


def test_sql_enqueue_notifies_the_queue_unless_the_job_is_for_later(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute('LISTEN "pgjobs.jobs"')
        _sql_enqueue(db, "task => 't', queue => 'later', run_at => now() + interval '1 hour'")
        _sql_enqueue(db, "task => 't', queue => 'soon'")
        note = next(listener.notifies(timeout=WAIT, stop_after=1))
    assert (note.channel, note.payload) == ("pgjobs.jobs", "soon")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("task => ''", "task name must be a non-empty string of at most 200 characters"),
        ("task => repeat('t', 201)", "task name must be a non-empty"),
        ("task => 't', queue => ''", "queue name must be a non-empty"),
        ("""task => 't', args => '{"a": 1}'""", "args must be a JSON array"),
        ("task => 't', kwargs => '[1]'", "kwargs must be a JSON object"),
        ("task => 't', max_attempts => 0", "max_attempts must be >= 1, got 0"),
    ],
)
def test_sql_enqueue_refuses_invalid_jobs(
    db: psycopg.Connection[Any], call: str, message: str
) -> None:
    # The input limits of migration 0005 (more cases in test_enqueue_limits.py).
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        db.execute(f"SELECT pgjobs.enqueue({call})")
    assert _count(db) == 0


def test_sql_enqueue_needs_a_task(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="task name must be"):
        db.execute("SELECT pgjobs.enqueue(task => NULL)")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        db.execute("SELECT pgjobs.enqueue(kwargs => '{}')")
    assert _count(db) == 0


def test_sql_enqueue_ignores_the_callers_search_path(db: psycopg.Connection[Any]) -> None:
    # Lookalike tables on the caller's path must not capture the job or the queue.
    db.execute("CREATE SCHEMA decoy")
    db.execute("CREATE TABLE decoy.jobs (LIKE pgjobs.jobs INCLUDING ALL)")
    db.execute("CREATE TABLE decoy.queues (LIKE pgjobs.queues INCLUDING ALL)")
    db.execute("SET search_path TO decoy, public")
    job_id = _sql_enqueue(db, "task => 't', queue => 'real'")
    db.execute("RESET search_path")
    assert _count(db, "decoy.jobs") == 0
    assert _count(db, "decoy.queues") == 0
    assert _job(db, job_id)["queue"] == "real"
    assert db.execute("SELECT name FROM pgjobs.queues").fetchall() == [("real",)]


def test_sql_metacharacters_through_sql_are_data(db: psycopg.Connection[Any]) -> None:
    evil = "q'; DROP TABLE pgjobs.jobs; --"
    job_id = _sql_enqueue(db, "task => %s, queue => %s, dedup_key => %s", evil, evil, evil)
    assert _sql_enqueue(db, "task => %s, dedup_key => %s", evil, evil) == job_id
    row = _job(db, job_id)
    assert (row["task"], row["queue"], row["dedup_key"]) == (evil, evil, evil)
    assert db.execute("SELECT name FROM pgjobs.queues").fetchall() == [(evil,)]


# ----------------------------------------------------------------------------- triggers
@pytest.fixture
def orders(db: psycopg.Connection[Any]) -> None:
    """A user table whose AFTER INSERT trigger enqueues a confirmation job per order."""
    db.execute("CREATE TABLE public.orders (id serial PRIMARY KEY, email text NOT NULL)")
    db.execute(
        """
        CREATE FUNCTION public.orders_enqueue_confirmation() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pgjobs.enqueue(
                task => 'orders.confirm',
                kwargs => jsonb_build_object('order_id', NEW.id, 'email', NEW.email),
                queue => 'orders',
                dedup_key => 'confirm:' || NEW.id);
            RETURN NEW;
        END $$
        """
    )
    db.execute(
        "CREATE TRIGGER orders_confirm AFTER INSERT ON public.orders"
        " FOR EACH ROW EXECUTE FUNCTION public.orders_enqueue_confirmation()"
    )


@pytest.mark.usefixtures("orders")
def test_enqueue_from_a_user_trigger_commits_with_the_order(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        order_id = conn.execute(
            "INSERT INTO orders (email) VALUES ('a@b.c') RETURNING id"
        ).fetchone()
        assert _count(db) == 0  # not before the order commits
        conn.commit()
    assert order_id is not None
    rows = db.execute("SELECT task, queue, kwargs, dedup_key FROM pgjobs.jobs").fetchall()
    assert rows == [
        (
            "orders.confirm",
            "orders",
            {"order_id": order_id[0], "email": "a@b.c"},
            f"confirm:{order_id[0]}",
        )
    ]


@pytest.mark.usefixtures("orders")
def test_enqueue_from_a_user_trigger_rolls_back_with_the_order(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO orders (email) VALUES ('a@b.c'), ('d@e.f')")
        inside = conn.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()
        assert inside == (2,)
        conn.rollback()
    assert _count(db, "public.orders") == 0
    assert _count(db) == 0
    assert _count(db, "pgjobs.queues") == 0


@pytest.mark.usefixtures("orders")
def test_a_multi_row_insert_enqueues_one_job_per_order_and_one_notification(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute('LISTEN "pgjobs.jobs"')
        db.execute(
            "INSERT INTO orders (email) SELECT 'u' || g || '@b.c' FROM generate_series(1, 25) g"
        )
        db.execute("SELECT pgjobs.enqueue(task => 'marker', queue => 'marker')")
        notes = [n.payload for n in listener.notifies(timeout=WAIT, stop_after=2)]
    assert notes == ["orders", "marker"]
    row = db.execute(
        "SELECT count(*), count(DISTINCT kwargs->>'order_id') FROM pgjobs.jobs"
        " WHERE task = 'orders.confirm'"
    ).fetchone()
    assert row == (25, 25)


@pytest.mark.usefixtures("orders")
def test_a_python_enqueue_and_a_trigger_share_the_transaction(
    app: pgjobs.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO orders (email) VALUES ('a@b.c')")
        app.enqueue("orders.audit", kwargs={"note": "from python"}, conn=conn)
        conn.rollback()
        conn.execute("INSERT INTO orders (email) VALUES ('g@h.i')")
        app.enqueue("orders.audit", kwargs={"note": "kept"}, conn=conn)
        conn.commit()
    rows = db.execute("SELECT task, kwargs->>'email', kwargs->>'note' FROM pgjobs.jobs ORDER BY id")
    assert rows.fetchall() == [("orders.confirm", "g@h.i", None), ("orders.audit", None, "kept")]
