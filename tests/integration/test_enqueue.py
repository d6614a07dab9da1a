"""The synchronous enqueue path against a real Postgres."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import pgjobs

WAIT = 30.0  # upper bound for waiting on another session; never an assertion on speed
EVIL = "q'; DROP TABLE pgjobs.jobs; --"


def _count(db: psycopg.Connection[Any], where: str = "true", *params: Any) -> int:
    row = db.execute(f"SELECT count(*) FROM pgjobs.jobs WHERE {where}", params).fetchone()
    assert row is not None
    return int(row[0])


def _job(db: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None, f"job {job_id} is not in pgjobs.jobs"
    return row


def _db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _wait_for_lock_waiter(dsn: str) -> None:
    """Block until some other session of this database waits on a row or tuple lock."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        watcher.execute("SET statement_timeout = '30s'")
        watcher.execute(
            "DO $$ BEGIN WHILE NOT EXISTS (SELECT FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid()) LOOP"
            " PERFORM pg_stat_clear_snapshot(); PERFORM pg_sleep(0.01); END LOOP; END $$"
        )


@pytest.fixture
def send_email(app: pgjobs.App) -> pgjobs.Task[..., None]:
    @app.task(name="mail.send", queue="emails", priority=3, max_attempts=4)
    def send(to: str, subject: str = "", body: Any = None) -> None:
        del to, subject, body

    return send


@pytest.fixture
def listener(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('LISTEN "pgjobs.jobs"')
        yield conn


def _notes(listener: psycopg.Connection[Any], timeout: float) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=timeout)]


# ----------------------------------------------------------------------------- basics
def test_enqueue_returns_an_id_and_writes_the_row(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    job_id = send_email.enqueue("a@b.c", subject="hi")
    assert type(job_id) is int
    row = _job(db, job_id)
    assert row["task"] == "mail.send"
    assert row["args"] == ["a@b.c"]
    assert row["kwargs"] == {"subject": "hi"}
    assert row["queue"] == "emails"
    assert row["priority"] == 3
    assert row["max_attempts"] == 4
    assert row["state"] == "queued"
    assert row["attempt"] == 0
    assert row["dedup_key"] is None
    assert row["errors"] == []
    assert row["run_at"] == row["enqueued_at"]
    assert abs(row["enqueued_at"] - _db_now(db)) < timedelta(minutes=1)
    assert send_email.enqueue("x@y.z") > job_id


def test_arguments_round_trip_through_jsonb(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    body = {
        "text": "tab\there, newline\nthere, quote ' \" backslash \\ done",
        "unicode": "héllo ✓ 😀",
        "nested": [1, 2.5, None, True, {"k": []}],
        "big": 2**62,
    }
    job_id = send_email.enqueue("a@b.c", body=body)
    assert _job(db, job_id)["kwargs"] == {"body": body}


def test_enqueue_by_name_without_a_registered_task(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    assert "remote.resize" not in app.tasks
    job_id = app.enqueue("remote.resize", kwargs={"image": 7, "sizes": [64, 128]})
    row = _job(db, job_id)
    assert (row["task"], row["args"], row["kwargs"]) == (
        "remote.resize",
        [],
        {"image": 7, "sizes": [64, 128]},
    )
    assert (row["queue"], row["priority"], row["max_attempts"]) == ("default", 0, None)

    other = app.enqueue("remote.resize", [1, 2], queue="images", priority=-2, max_attempts=9)
    row = _job(db, other)
    assert (row["args"], row["queue"], row["priority"], row["max_attempts"]) == (
        [1, 2],
        "images",
        -2,
        9,
    )


def test_enqueue_by_name_of_a_registered_task_uses_its_defaults_and_checks_its_signature(
    app: pgjobs.App, send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    job_id = app.enqueue("mail.send", kwargs={"to": "a@b.c"})
    row = _job(db, job_id)
    assert (row["queue"], row["priority"], row["max_attempts"]) == ("emails", 3, 4)
    with pytest.raises(TypeError, match=r"mail\.send"):
        app.enqueue("mail.send", kwargs={"nobody": 1})
    assert _count(db) == 1


def test_enqueue_by_name_rejects_bad_argument_containers(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(TypeError, match="args must be a list"):
        app.enqueue("remote.x", args="abc")
    with pytest.raises(TypeError, match="kwargs must be a dict"):
        app.enqueue("remote.x", kwargs=[("a", 1)])  # type: ignore[arg-type]
    assert _count(db) == 0


# ----------------------------------------------------------------------------- transactions
def test_caller_transaction_rollback_leaves_no_job(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        assert not conn.autocommit
        job_id = send_email.options(conn=conn).enqueue("a@b.c")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        row = conn.execute("SELECT task FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone()
        assert row == ("mail.send",)  # visible inside the transaction
        conn.rollback()
    assert _count(db) == 0
    assert db.execute("SELECT count(*) FROM pgjobs.queues").fetchone() == (0,)


def test_caller_transaction_commit_makes_the_job_visible_only_then(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        job_id = send_email.options(conn=conn).enqueue("a@b.c", subject="order 1")
        assert _count(db, "id = %s", job_id) == 0  # another session cannot see it yet
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.commit()
        assert _count(db, "id = %s", job_id) == 1
        assert _job(db, job_id)["kwargs"] == {"subject": "order 1"}


def test_enqueue_inside_a_transaction_block(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    def failing_order(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            send_email.options(conn=conn).enqueue("lost@b.c")
            conn.execute("SELECT 1 / 0")  # the business write fails after the enqueue

    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            failing_order(conn)
        with conn.transaction():
            kept = send_email.options(conn=conn).enqueue("kept@b.c")
    assert db.execute("SELECT id, args FROM pgjobs.jobs").fetchall() == [(kept, ["kept@b.c"])]


def test_a_cursor_works_as_conn(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            job_id = send_email.options(conn=cur).enqueue("a@b.c")
            assert cur.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (1,)
            ids = send_email.enqueue_many([{"to": "b@b.c"}], conn=cur)
            app_id = send_email.app.enqueue("remote.x", conn=cur)
        assert _count(db) == 0
        conn.commit()
    assert sorted(r[0] for r in db.execute("SELECT id FROM pgjobs.jobs")) == sorted(
        [job_id, *ids, app_id]
    )


def test_an_async_connection_is_refused_by_sync_enqueue(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    async def attempt() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            with pytest.raises(TypeError, match="enqueue_async"):
                send_email.options(conn=aconn).enqueue("a@b.c")
            with pytest.raises(TypeError, match="enqueue_async"):
                send_email.enqueue_many([{"to": "a@b.c"}], conn=aconn)
            async with aconn.cursor() as acur:
                with pytest.raises(TypeError, match="enqueue_async"):
                    send_email.app.enqueue("remote.x", conn=acur)
            await aconn.commit()

    asyncio.run(attempt())
    assert _count(db) == 0


def test_something_else_as_conn_is_a_type_error(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(TypeError, match="conn must be a psycopg Connection"):
        send_email.options(conn="postgresql://nope").enqueue("a@b.c")  # type: ignore[arg-type]
    assert _count(db) == 0


# ----------------------------------------------------------------------------- notify
def test_committed_enqueue_wakes_a_listener_only_after_commit(
    send_email: pgjobs.Task[..., None], dsn: str, listener: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        send_email.options(conn=conn).enqueue("a@b.c")
        assert _notes(listener, timeout=0.2) == []  # nothing is sent before commit
        conn.commit()
    note = next(listener.notifies(timeout=WAIT, stop_after=1))
    assert (note.channel, note.payload) == ("pgjobs.jobs", "emails")


def test_rolled_back_enqueue_notifies_nobody(
    send_email: pgjobs.Task[..., None], dsn: str, listener: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        send_email.options(conn=conn).enqueue("a@b.c")
        conn.rollback()
        send_email.options(conn=conn, queue="marker").enqueue("a@b.c")
        conn.commit()
    # Notifications arrive in commit order, so the first one tells whether a rolled-back
    # job sent anything.
    note = next(listener.notifies(timeout=WAIT, stop_after=1))
    assert note.payload == "marker"


def test_one_notification_per_queue_per_transaction(
    send_email: pgjobs.Task[..., None], dsn: str, listener: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        send_email.enqueue_many([{"to": f"{n}@b.c"} for n in range(200)], conn=conn)
        for _ in range(5):
            send_email.options(conn=conn).enqueue("a@b.c")
        send_email.options(conn=conn, queue="other").enqueue("a@b.c")
        conn.commit()
    with psycopg.connect(dsn) as conn:
        send_email.options(conn=conn, queue="end").enqueue("a@b.c")
        conn.commit()
    notes = [n.payload for n in listener.notifies(timeout=WAIT, stop_after=3)]
    assert sorted(notes[:2]) == ["emails", "other"]
    assert notes[2] == "end"  # the next transaction's; no repeats of the first


def test_a_future_job_does_not_wake_workers(
    send_email: pgjobs.Task[..., None], dsn: str, listener: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        send_email.options(conn=conn, queue="later", delay=timedelta(hours=1)).enqueue("a@b.c")
        send_email.options(conn=conn, queue="now").enqueue("a@b.c")
        conn.commit()
    note = next(listener.notifies(timeout=WAIT, stop_after=1))
    assert note.payload == "now"


def test_own_connection_enqueue_notifies(
    send_email: pgjobs.Task[..., None], listener: psycopg.Connection[Any]
) -> None:
    send_email.options(queue="direct").enqueue("a@b.c")
    note = next(listener.notifies(timeout=WAIT, stop_after=1))
    assert (note.channel, note.payload) == ("pgjobs.jobs", "direct")


# ----------------------------------------------------------------------------- options
def test_delay_sets_run_at_relative_to_the_database_clock(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    job_id = send_email.options(delay=timedelta(minutes=5)).enqueue("a@b.c")
    row = _job(db, job_id)
    assert row["run_at"] - row["enqueued_at"] == timedelta(minutes=5)
    assert abs(row["run_at"] - (_db_now(db) + timedelta(minutes=5))) < timedelta(minutes=1)


def test_run_at_is_stored_as_given(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    when = datetime(2031, 4, 5, 6, 7, 8, 123456, tzinfo=UTC)
    job_id = send_email.options(run_at=when).enqueue("a@b.c")
    assert _job(db, job_id)["run_at"] == when
    past = _db_now(db) - timedelta(days=3)
    old = send_email.options(run_at=past).enqueue("a@b.c")
    assert _job(db, old)["run_at"] == past


def test_time_option_errors_write_nothing(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(ValueError, match="either delay or run_at"):
        send_email.options(delay=timedelta(1), run_at=datetime.now(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        send_email.options(run_at=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="delay must be a timedelta"):
        send_email.options(delay=5)  # type: ignore[arg-type]
    assert _count(db) == 0


def test_priority_queue_and_max_attempts_overrides(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    job_id = send_email.options(priority=-7, queue="bulk", max_attempts=1).enqueue("a@b.c")
    row = _job(db, job_id)
    assert (row["priority"], row["queue"], row["max_attempts"]) == (-7, "bulk", 1)
    zero = send_email.options(priority=0).enqueue("a@b.c")
    assert _job(db, zero)["priority"] == 0  # 0 overrides the task's 3
    assert db.execute("SELECT name FROM pgjobs.queues ORDER BY name").fetchall() == [
        ("bulk",),
        ("emails",),
    ]


def test_bad_option_values_are_refused(send_email: pgjobs.Task[..., None]) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        send_email.options(max_attempts=0)
    with pytest.raises(TypeError, match="priority"):
        send_email.options(priority="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue name"):
        send_email.options(queue="")
    with pytest.raises(ValueError, match="dedup_key"):
        send_email.options(dedup_key="")


# ----------------------------------------------------------------------------- dedup
def test_dedup_key_returns_the_unfinished_job(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    ran: list[str] = []

    @app.task(name="welcome")
    def welcome(user: str) -> None:
        ran.append(user)

    first = welcome.options(dedup_key="welcome:42").enqueue("ann")
    again = welcome.options(dedup_key="welcome:42").enqueue("bob")
    other = welcome.options(dedup_key="welcome:43").enqueue("cid")
    assert again == first
    assert other != first
    assert _job(db, first)["args"] == ["ann"]  # the duplicate changed nothing
    assert _count(db) == 2

    app.run_worker(burst=True, install_signal_handlers=False)
    assert sorted(ran) == ["ann", "cid"]
    assert _count(db) == 0

    fresh = welcome.options(dedup_key="welcome:42").enqueue("dan")
    assert fresh not in (first, other)
    assert _job(db, fresh)["dedup_key"] == "welcome:42"
    history = db.execute(
        "SELECT id, state FROM pgjobs.job_history WHERE dedup_key = 'welcome:42'"
    ).fetchall()
    assert history == [(first, "succeeded")]


def test_dedup_key_holds_for_a_running_job(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    first = send_email.options(dedup_key="k").enqueue("a@b.c")
    db.execute("UPDATE pgjobs.jobs SET state = 'running', worker_id = 1 WHERE id = %s", (first,))
    assert send_email.options(dedup_key="k").enqueue("a@b.c") == first


def test_dedup_against_an_uncommitted_holder_waits_for_its_outcome(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    results: list[int] = []
    failures: list[BaseException] = []

    def contender() -> None:
        try:
            results.append(send_email.options(dedup_key="race").enqueue("b@b.c"))
        except BaseException as exc:
            failures.append(exc)

    with psycopg.connect(dsn) as holder:
        first = send_email.options(conn=holder, dedup_key="race").enqueue("a@b.c")
        thread = threading.Thread(target=contender)
        thread.start()
        _wait_for_lock_waiter(dsn)
        holder.commit()
        thread.join(WAIT)
    assert not failures, failures
    assert results == [first]
    assert _count(db) == 1


def test_dedup_against_a_rolled_back_holder_creates_the_job(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    results: list[int] = []
    failures: list[BaseException] = []

    def contender() -> None:
        try:
            results.append(send_email.options(dedup_key="race").enqueue("b@b.c"))
        except BaseException as exc:
            failures.append(exc)

    with psycopg.connect(dsn) as holder:
        first = send_email.options(conn=holder, dedup_key="race").enqueue("a@b.c")
        thread = threading.Thread(target=contender)
        thread.start()
        _wait_for_lock_waiter(dsn)
        holder.rollback()
        thread.join(WAIT)
    assert not failures, failures
    assert len(results) == 1
    assert results[0] != first
    assert _job(db, results[0])["args"] == ["b@b.c"]
    assert _count(db) == 1


def test_enqueue_many_refuses_a_dedup_key(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(ValueError, match="dedup_key"):
        send_email.options(dedup_key="k").enqueue_many([{"to": "a@b.c"}])
    assert _count(db) == 0


# ----------------------------------------------------------------------------- enqueue_many
def test_enqueue_many_returns_ids_in_order(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    items = [{"to": f"{n}@b.c", "subject": f"#{n}"} for n in range(50)]
    ids = send_email.enqueue_many(items)
    assert len(ids) == 50
    assert len(set(ids)) == 50
    assert all(type(i) is int for i in ids)
    rows = dict(db.execute("SELECT id, kwargs FROM pgjobs.jobs").fetchall())
    assert [rows[i] for i in ids] == items
    row = _job(db, ids[0])
    assert (row["task"], row["queue"], row["priority"], row["max_attempts"], row["args"]) == (
        "mail.send",
        "emails",
        3,
        4,
        [],
    )
    assert (row["state"], row["attempt"], row["errors"]) == ("queued", 0, [])
    assert row["run_at"] == row["enqueued_at"]


def test_enqueue_many_with_options(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    call = send_email.options(queue="bulk", priority=9, max_attempts=2, delay=timedelta(hours=2))
    ids = call.enqueue_many([{"to": "a@b.c"}, {"to": "b@b.c"}])
    for job_id in ids:
        row = _job(db, job_id)
        assert (row["queue"], row["priority"], row["max_attempts"]) == ("bulk", 9, 2)
        assert row["run_at"] - row["enqueued_at"] == timedelta(hours=2)
    assert db.execute("SELECT name FROM pgjobs.queues").fetchall() == [("bulk",)]
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    (at,) = send_email.options(run_at=when).enqueue_many([{"to": "c@b.c"}])
    assert _job(db, at)["run_at"] == when


def test_enqueue_many_joins_the_caller_transaction(
    send_email: pgjobs.Task[..., None], dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        ids = send_email.enqueue_many([{"to": "a@b.c"}, {"to": "b@b.c"}], conn=conn)
        assert len(ids) == 2
        assert _count(db) == 0
        conn.rollback()
        assert _count(db) == 0
        kept = send_email.enqueue_many([{"to": "c@b.c"}], conn=conn)
        conn.commit()
    assert [r[0] for r in db.execute("SELECT id FROM pgjobs.jobs")] == kept


def test_enqueue_many_ten_thousand(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    ids = send_email.enqueue_many({"to": f"user{n}@b.c"} for n in range(10_000))
    assert len(ids) == 10_000
    assert ids == sorted(ids)
    assert len(set(ids)) == 10_000
    assert _count(db) == 10_000
    row = db.execute(
        "SELECT kwargs->>'to' FROM pgjobs.jobs WHERE id = %s", (ids[9_999],)
    ).fetchone()
    assert row == ("user9999@b.c",)


def test_enqueue_many_of_nothing_is_nothing(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    assert send_email.enqueue_many([]) == []
    assert _count(db) == 0


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"to": "a@b.c"}, "not a dict"], "keyword-argument dicts, got str"),
        ([{"to": "a@b.c"}, {"to": object()}], "argument 'to' is not JSON serializable"),
        ([{"to": "a@b.c"}, {"too": "x"}], "mail.send"),
        ([{"to": "a@b.c"}, {"to": float("nan")}], "nan is not valid JSON"),
    ],
)
def test_enqueue_many_with_a_bad_item_writes_nothing(
    send_email: pgjobs.Task[..., None],
    dsn: str,
    db: psycopg.Connection[Any],
    items: list[Any],
    message: str,
) -> None:
    with pytest.raises(TypeError, match=message):
        send_email.enqueue_many(items)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(TypeError, match=message):
            send_email.enqueue_many(items, conn=conn)
        # The failure happened before any I/O: the caller's transaction is still usable.
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
        conn.commit()
    assert _count(db) == 0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "kwargs", "label"),
    [
        ((object(),), {}, "positional argument 0"),
        (("a@b.c",), {"body": datetime.now(UTC)}, "argument 'body'"),
        (("a@b.c",), {"body": Decimal("1.5")}, "argument 'body'"),
        (("a@b.c",), {"body": {"nested": {1, 2}}}, "argument 'body'"),
        (("a@b.c",), {"body": float("inf")}, "argument 'body'"),
    ],
)
def test_non_json_arguments_raise_type_error_naming_task_and_argument(
    send_email: pgjobs.Task[..., None],
    db: psycopg.Connection[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    label: str,
) -> None:
    with pytest.raises(TypeError) as info:
        send_email.enqueue(*args, **kwargs)
    message = str(info.value)
    assert "'mail.send'" in message
    assert label in message
    assert "not JSON serializable" in message
    with pytest.raises(TypeError, match=label):
        send_email.app.enqueue("remote.task", args, kwargs)
    assert _count(db) == 0


def test_arguments_that_do_not_fit_the_handler_are_refused(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(TypeError, match=r"mail\.send"):
        send_email.enqueue()
    with pytest.raises(TypeError, match=r"mail\.send"):
        send_email.enqueue("a@b.c", colour="red")
    assert _count(db) == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\x00b", "NUL"),
        ({"key\x00": 1}, "NUL"),
        (["x", "\\\x00"], "NUL"),
        ("caf\udce9", "surrogate"),  # what os.fsdecode() makes of a latin-1 file name
    ],
)
def test_json_that_postgres_cannot_store_is_refused_before_any_io(
    send_email: pgjobs.Task[..., None],
    dsn: str,
    db: psycopg.Connection[Any],
    value: Any,
    reason: str,
) -> None:
    # Valid JSON, but jsonb rejects U+0000 and UTF-8 has no lone surrogates: the enqueue
    # must name the argument and leave the caller's transaction usable.
    with pytest.raises(TypeError, match=rf"'mail.send': argument 'body' .*{reason}"):
        send_email.enqueue("a@b.c", body=value)
    with pytest.raises(TypeError, match=rf"'mail.send': argument 'body' .*{reason}"):
        send_email.enqueue_many([{"to": "ok"}, {"to": "a@b.c", "body": value}])
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(TypeError, match=reason):
            send_email.options(conn=conn).enqueue("a@b.c", body=value)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
        conn.commit()
    assert _count(db) == 0


def test_escaped_looking_strings_are_ordinary_strings(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    tricky = ["\\u0000", "\\\\u0000", "\\x00", "\\ud800", "u0000"]
    job_id = send_email.enqueue("a@b.c", body=tricky)
    (many,) = send_email.enqueue_many([{"to": "a@b.c", "body": tricky}])
    assert _job(db, job_id)["kwargs"] == {"body": tricky}
    assert _job(db, many)["kwargs"] == {"to": "a@b.c", "body": tricky}


def test_sql_metacharacters_are_stored_verbatim(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    evil_task = app.task(name=EVIL, queue=EVIL)(lambda note: None)
    job_id = evil_task.options(dedup_key=EVIL).enqueue(note=EVIL)
    row = _job(db, job_id)
    assert (row["task"], row["queue"], row["dedup_key"], row["kwargs"]) == (
        EVIL,
        EVIL,
        EVIL,
        {"note": EVIL},
    )
    assert evil_task.options(dedup_key=EVIL).enqueue(note="again") == job_id
    by_name = app.enqueue(EVIL + "2", [EVIL], queue=EVIL + '"', dedup_key='x"); --')
    assert _job(db, by_name)["queue"] == EVIL + '"'
    assert db.execute("SELECT name FROM pgjobs.queues ORDER BY name").fetchall() == [
        (EVIL,),
        (EVIL + '"',),
    ]
    assert _count(db) == 2  # the table is still there


def test_copy_special_characters_are_stored_verbatim(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    # COPY has its own text escaping: tabs, newlines and backslashes must survive it (names
    # refuse control characters, so only the arguments carry tabs and newlines).
    odd = "tab\tnew\nline\\N back\\slash \\. end\r ✓"
    name = odd.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    task = app.task(name="copy." + name, queue="q " + name)(lambda value: None)
    ids = task.options(queue=EVIL).enqueue_many([{"value": odd}, {"value": "\\N"}])
    rows = db.execute(
        "SELECT task, queue, kwargs FROM pgjobs.jobs WHERE id = ANY(%s) ORDER BY id", (ids,)
    ).fetchall()
    assert rows == [
        ("copy." + name, EVIL, {"value": odd}),
        ("copy." + name, EVIL, {"value": "\\N"}),
    ]
    (plain,) = task.enqueue_many([{"value": None}])
    assert _job(db, plain)["queue"] == "q " + name
    assert _job(db, plain)["kwargs"] == {"value": None}


# ----------------------------------------------------------------------------- errors
def test_enqueue_without_the_schema_raises_schema_error(
    send_email: pgjobs.Task[..., None], db: psycopg.Connection[Any]
) -> None:
    db.execute("DROP SCHEMA pgjobs CASCADE")
    with pytest.raises(pgjobs.SchemaError, match="run `pgjobs migrate`") as info:
        send_email.enqueue("a@b.c")
    assert isinstance(info.value.__cause__, psycopg.Error)
    with pytest.raises(pgjobs.SchemaError, match="run `pgjobs migrate`"):
        send_email.enqueue_many([{"to": "a@b.c"}])
    with pytest.raises(pgjobs.SchemaError, match="run `pgjobs migrate`"):
        send_email.app.enqueue("remote.x")


def test_enqueue_to_an_unmigrated_custom_schema_raises_schema_error(dsn: str) -> None:
    app = pgjobs.App(dsn, schema="not_here")
    try:
        with pytest.raises(pgjobs.SchemaError) as info:
            app.enqueue("remote.x")
    finally:
        app.close()
    assert "'not_here'" in str(info.value)
    assert "pgjobs migrate" in str(info.value)


def test_enqueue_to_an_unreachable_database_hides_the_password() -> None:
    app = pgjobs.App("postgresql://u:s3cret@127.0.0.1:1/x")
    try:
        with pytest.raises(pgjobs.DatabaseError) as info:
            app.enqueue("remote.x", kwargs={"a": 1})
    finally:
        app.close()
    message = str(info.value)
    assert "127.0.0.1:1/x" in message
    assert "s3cret" not in message
    assert "s3cret" not in repr(info.value)
    assert isinstance(info.value, pgjobs.PgJobsError)


def test_a_database_error_in_the_caller_transaction_is_translated(
    send_email: pgjobs.Task[..., None], dsn: str
) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        # The caller's transaction is aborted; pgjobs says so as a pgjobs error.
        with pytest.raises(pgjobs.DatabaseError, match="transaction is aborted"):
            send_email.options(conn=conn).enqueue("a@b.c")
        conn.rollback()
