"""Least privilege: sql/roles.sql, applied with psql, on the real server.

The producer role can enqueue at every door and do nothing else; the worker role runs
jobs with everything a worker does (claim, ack, retry, bury, LISTEN, heartbeat, advisory
locks, rescue, prune, cron) and can drop, alter, truncate or create nothing. Each test
makes uniquely named roles (roles are cluster-wide and the server may be shared) and
drops them afterwards. The servers the tests use trust local connections, so a login
role connects with just its name.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from worker_harness import WAIT, running_worker, until

import pgjobs
from pgjobs.worker import Worker, WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
ROLES_SQL = ROOT / "sql" / "roles.sql"
PGJOBS = Path(sys.executable).parent / "pgjobs"
CHAOS = ROOT / "tests" / "chaos"

Conn = psycopg.Connection[Any]


def psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from pgjobs.embedded import _server_module

    bins = _server_module().utils.POSTGRES_VERSIONS
    return str(bins[max(bins)] / "psql")


def apply_roles_sql(dsn: str, **variables: str) -> str:
    args = [psql(), dsn, "-X", "-q", "-f", str(ROLES_SQL)]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@dataclass
class Roles:
    producer_role: str
    worker_role: str
    producer: str  # a login role, member of producer_role
    worker: str  # a login role, member of worker_role
    admin_dsn: str

    def dsn(self, user: str) -> str:
        params = conninfo_to_dict(self.admin_dsn)
        params["user"] = user
        params.pop("password", None)
        return make_conninfo("", **params)


@pytest.fixture
def roles(dsn: str, db: Conn) -> Iterator[Roles]:
    suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
    made = Roles(
        f"pgjobs_producer_t{suffix}",
        f"pgjobs_worker_t{suffix}",
        f"app_t{suffix}",
        f"jobs_t{suffix}",
        dsn,
    )
    names = [made.producer, made.worker, made.producer_role, made.worker_role]
    try:
        apply_roles_sql(dsn, producer_role=made.producer_role, worker_role=made.worker_role)
        for login, group in ((made.producer, made.producer_role), (made.worker, made.worker_role)):
            db.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(login), sql.Identifier(group)
                )
            )
        yield made
    finally:
        idents = sql.SQL(", ").join(
            sql.Identifier(row[0])
            for row in db.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,)
            ).fetchall()
        )
        if idents.as_string(db):
            db.execute(sql.SQL("DROP OWNED BY {}").format(idents))
            db.execute(sql.SQL("DROP ROLE {}").format(idents))


def _refused(conn: Conn, statement: str) -> None:
    with pytest.raises(pg_errors.InsufficientPrivilege), conn.transaction():
        conn.execute(statement)


def _copy_refused(conn: Conn, row: tuple[Any, ...]) -> None:
    with (
        pytest.raises(pg_errors.InsufficientPrivilege),
        conn.transaction(),
        conn.cursor().copy("COPY pgjobs.jobs (id, task) FROM STDIN") as copy,
    ):
        copy.write_row(row)


FORBIDDEN_TO_BOTH = [
    "DROP TABLE pgjobs.jobs",
    "ALTER TABLE pgjobs.jobs ADD COLUMN evil int",
    "ALTER TABLE pgjobs.job_history DROP COLUMN errors",
    "TRUNCATE pgjobs.jobs",
    "TRUNCATE pgjobs.job_history",
    "CREATE TABLE pgjobs.evil (id int)",
    "CREATE SCHEMA evil",
    "DROP FUNCTION pgjobs.enqueue",
    "CREATE FUNCTION pgjobs.enqueue(task text) RETURNS bigint LANGUAGE sql AS 'SELECT 1'",
    "DROP TRIGGER jobs_after_insert ON pgjobs.jobs",
    "UPDATE pgjobs.migrations SET version = version",
    "DELETE FROM pgjobs.migrations",
    "INSERT INTO pgjobs.migrations (version, name) VALUES (999, 'evil')",
    "UPDATE pgjobs.queues SET paused = true",
    "DROP SCHEMA pgjobs CASCADE",
    # the lock that serialises migrations: nobody but the owner may hold it up
    "LOCK TABLE pgjobs.migrations IN SHARE ROW EXCLUSIVE MODE",
    "LOCK TABLE pgjobs.migrations IN ROW EXCLUSIVE MODE",
    "SELECT version FROM pgjobs.migrations FOR SHARE",
]


def test_roles_sql_is_idempotent_and_uses_its_defaults(roles: Roles, db: Conn) -> None:
    apply_roles_sql(
        roles.admin_dsn, producer_role=roles.producer_role, worker_role=roles.worker_role
    )
    text = ROLES_SQL.read_text()
    assert "\\set producer_role pgjobs_producer" in text
    assert "\\set worker_role pgjobs_worker" in text
    assert "\\set schema pgjobs" in text
    members = db.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
        " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
        (roles.worker_role,),
    ).fetchall()
    assert members == [(roles.producer_role,)], "the worker role should include the producer's"


def test_roles_sql_accounts_for_every_object_of_the_schema(db: Conn) -> None:
    """A new table, view, sequence or function must be granted or named admin-only in
    roles.sql: this fails when a migration adds one and roles.sql was not revisited."""
    text = ROLES_SQL.read_text()
    rows = db.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'pgjobs' AND c.relkind IN ('r', 'v', 'm', 'S', 'p')"
        " UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'pgjobs' AND p.prokind = 'f'"
        " AND p.prorettype <> 'trigger'::regtype"
    ).fetchall()
    missing = sorted(name for (name,) in rows if name not in text)
    assert not missing, f"objects roles.sql does not mention: {missing}"


def test_the_producer_can_enqueue_at_every_door(roles: Roles, db: Conn) -> None:
    app = pgjobs.App(roles.dsn(roles.producer))
    try:
        task = app.task(name="roles.produced")(lambda n=0: None)
        ids = [task.enqueue(1)]
        ids.append(task.options(dedup_key="k1").enqueue(2))
        assert task.options(dedup_key="k1").enqueue(3) == ids[-1], "dedup lookup failed"
        ids += task.enqueue_many([{"n": 4}, {"n": 5}])
        ids.append(asyncio.run(task.enqueue_async(6)))
        ids.append(app.enqueue("roles.by_name", queue="a-new-queue"))  # the trigger adds it
        with psycopg.connect(roles.dsn(roles.producer)) as conn:
            ids.append(task.options(conn=conn).enqueue(7))
            row = conn.execute("SELECT pgjobs.enqueue(task => 'roles.sql')").fetchone()
            assert row is not None
            ids.append(row[0])
            conn.commit()
    finally:
        app.close()
    code = subprocess.run(
        [str(PGJOBS), "enqueue", "roles.cli", "--dsn", roles.dsn(roles.producer)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert code.returncode == 0, code.stdout + code.stderr
    ids.append(int(code.stdout.strip()))
    found = db.execute("SELECT count(*) FROM pgjobs.jobs WHERE id = ANY(%s)", (ids,)).fetchone()
    assert found == (len(ids),)
    assert db.execute("SELECT 1 FROM pgjobs.queues WHERE name = 'a-new-queue'").fetchone()


def test_the_producer_can_do_nothing_else(roles: Roles, db: Conn) -> None:
    db.execute("SELECT pgjobs.enqueue(task => 'roles.other', kwargs => '{\"secret\": 1}')")
    with psycopg.connect(roles.dsn(roles.producer), autocommit=True) as conn:
        for statement in [
            *FORBIDDEN_TO_BOTH,
            "SELECT kwargs FROM pgjobs.jobs",
            "SELECT * FROM pgjobs.jobs",
            "UPDATE pgjobs.jobs SET state = 'running'",
            "DELETE FROM pgjobs.jobs",
            "SELECT * FROM pgjobs.job_history",
            "SELECT * FROM pgjobs.workers",
            "INSERT INTO pgjobs.workers (id, host, pid, concurrency) VALUES (1, 'h', 1, 1)",
            "SELECT * FROM pgjobs.migrations",
            "SELECT * FROM pgjobs.schedules",
            "SELECT * FROM pgjobs.cron_runs",
            "SELECT nextval('pgjobs.worker_id_seq')",
            # no raw writes (a forged id ahead of the sequence), no reads of other jobs
            "INSERT INTO pgjobs.jobs (id, task) VALUES (1000000, 'roles.forged')",
            "INSERT INTO pgjobs.jobs (task) VALUES ('roles.raw')",
            "SELECT id, dedup_key FROM pgjobs.jobs",
            "SELECT nextval('pgjobs.job_id_seq')",
            "SELECT setval('pgjobs.job_id_seq', 1000000)",
            "SELECT last_value FROM pgjobs.job_id_seq",
            "INSERT INTO pgjobs.queues (name) VALUES ('roles.q')",
            "SELECT * FROM pgjobs.queues",
        ]:
            _refused(conn, statement)
        _copy_refused(conn, (1000001, "roles.copied"))
    # A worker or a migration run as the producer stops with a clear error.
    app = pgjobs.App(roles.dsn(roles.producer))
    try:
        with pytest.raises(pgjobs.DatabaseError, match="permission denied"):
            asyncio.run(Worker(app).check_schema())
        with pytest.raises(pgjobs.DatabaseError, match="permission denied"):
            app.migrate()
    finally:
        app.close()
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (1,)


@pytest.mark.timeout(120)
def test_the_worker_role_runs_every_part_of_a_worker(roles: Roles, db: Conn) -> None:
    # As the admin: a job of a lost worker (to rescue) and an old finished job (to prune).
    lost = db.execute(
        "INSERT INTO pgjobs.jobs (task, state, attempt, started_at, worker_id)"
        " VALUES ('roles.ok', 'running', 1, now(), 999999) RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    db.execute(
        "INSERT INTO pgjobs.job_history (id, task, queue, args, kwargs, priority, state,"
        " attempt, run_at, enqueued_at, finished_at, errors) VALUES (-1, 'old', 'default',"
        " '[]', '{}', 0, 'succeeded', 1, now(), now(), now() - interval '30 days', '[]')"
    )
    app = pgjobs.App(roles.dsn(roles.worker))
    ran: list[str] = []
    ticks: list[int] = []

    @app.task(name="roles.ok")
    def ok() -> None:
        ran.append("ok")

    @app.task(name="roles.fails", max_attempts=2, retry=pgjobs.Backoff(initial=0, jitter=0))
    def fails() -> None:
        raise RuntimeError("boom")

    @app.task(name="roles.follow_up")
    async def follow_up() -> None:
        ran.append("follow_up")

    @app.task(name="roles.chain")
    async def chain() -> None:
        await follow_up.enqueue_async()  # handlers enqueue with the worker's rights

    if hasattr(app, "every"):

        @app.every(timedelta(seconds=1), name="roles-tick")
        def tick() -> None:
            ticks.append(1)

    async def main() -> None:
        config = WorkerConfig(
            poll_interval=30, heartbeat_interval=0.3, rescue_interval=0.2, prune_interval=0.3
        )
        async with running_worker(app, config) as worker:
            first_beat = db.execute("SELECT heartbeat_at FROM pgjobs.workers").fetchone()
            await asyncio.sleep(0.5)
            # Woken by NOTIFY (it would poll only every 30 s).
            await ok.enqueue_async()
            await fails.enqueue_async()
            await chain.enqueue_async()

            async def settled() -> bool:
                left = db.execute("SELECT count(*) FROM pgjobs.jobs WHERE task LIKE 'roles.%%'")
                pruned = db.execute("SELECT count(*) FROM pgjobs.job_history WHERE id = -1")
                return (
                    left.fetchone() == (0,)
                    and pruned.fetchone() == (0,)
                    and (bool(ticks) or not hasattr(app, "every"))
                )

            await until(settled, "every job, the rescue, the pruning and a cron tick", WAIT)
            beat = db.execute("SELECT heartbeat_at FROM pgjobs.workers").fetchone()
            assert beat is not None
            assert first_beat is not None
            assert beat[0] > first_beat[0], "no heartbeat"
            assert worker.exit_code == 0

    try:
        asyncio.run(main())
    finally:
        app.close()
    assert sorted(ran) == ["follow_up", "ok", "ok"]
    states = dict(
        db.execute(
            "SELECT task, string_agg(state::text, ',') FROM pgjobs.job_history"
            " WHERE task LIKE 'roles.%%' GROUP BY task"
        ).fetchall()
    )
    assert states == {
        "roles.ok": "succeeded,succeeded",
        "roles.fails": "dead",
        "roles.chain": "succeeded",
        "roles.follow_up": "succeeded",
    }
    kinds = db.execute("SELECT errors->0->>'kind' FROM pgjobs.job_history WHERE id = %s", (lost,))
    assert kinds.fetchone() == ("worker_lost",)
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)


@pytest.mark.timeout(120)
def test_the_cli_worker_runs_as_the_worker_role(roles: Roles, db: Conn, tmp_path: Path) -> None:
    job = db.execute("SELECT pgjobs.enqueue(task => 'chaos.work')").fetchone()
    env = dict(os.environ, PGJOBS_DSN=roles.dsn(roles.worker), PGJOBS_CHAOS_DIR=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHAOS), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [str(PGJOBS), "worker", "chaosapp:app", "--burst"],
        cwd=CHAOS,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert job is not None
    state = db.execute("SELECT state::text FROM pgjobs.job_history WHERE id = %s", (job[0],))
    assert state.fetchone() == ("succeeded",)


def test_the_worker_role_can_drop_alter_or_create_nothing(roles: Roles) -> None:
    with psycopg.connect(roles.dsn(roles.worker), autocommit=True) as conn:
        for statement in FORBIDDEN_TO_BOTH:
            _refused(conn, statement)
    app = pgjobs.App(roles.dsn(roles.worker))
    try:
        with pytest.raises(pgjobs.DatabaseError, match="permission denied"):
            app.migrate()
    finally:
        app.close()


# ---------------------------------------------------------------- producer rights (issue 10)
def _ids(db: Conn, task: str) -> list[int]:
    rows = db.execute("SELECT id FROM pgjobs.jobs WHERE task = %s ORDER BY id", (task,))
    return [row[0] for row in rows.fetchall()]


def test_a_producer_cannot_forge_the_id_of_a_later_job(roles: Roles, db: Conn) -> None:
    # The attack: take an id ahead of the sequence, so that the job that later gets it
    # collides (and its ack fails on the history's primary key).
    ahead = db.execute("SELECT last_value + 1 FROM pgjobs.job_id_seq").fetchone()
    assert ahead is not None
    with psycopg.connect(roles.dsn(roles.producer), autocommit=True) as conn:
        _refused(conn, f"INSERT INTO pgjobs.jobs (id, task) VALUES ({ahead[0]}, 'roles.forged')")
        _copy_refused(conn, (ahead[0], "roles.forged"))
        # The enqueue functions take no id: the sequence gives them.
        with pytest.raises(pg_errors.UndefinedFunction):
            conn.execute("SELECT pgjobs.enqueue(task => 'roles.forged', id => 1)")
        row = conn.execute(
            "SELECT pgjobs.enqueue_many(task => 'roles.many', kwargs => %s::jsonb[])",
            (['{"n": 1}', '{"n": 2}'],),
        ).fetchone()
    assert row is not None
    assert row[0] == _ids(db, "roles.many")
    assert not _ids(db, "roles.forged")


def test_a_producer_cannot_read_dedup_keys_or_arguments(roles: Roles, db: Conn) -> None:
    db.execute(
        "SELECT pgjobs.enqueue(task => 'roles.other', kwargs => '{\"secret\": 1}',"
        " dedup_key => 'other-producers-key')"
    )
    with psycopg.connect(roles.dsn(roles.producer), autocommit=True) as conn:
        for statement in [
            "SELECT dedup_key FROM pgjobs.jobs",
            "SELECT id FROM pgjobs.jobs WHERE dedup_key = 'other-producers-key'",
            "SELECT count(*) FROM pgjobs.jobs",
            "SELECT kwargs FROM pgjobs.job_history",
        ]:
            _refused(conn, statement)


def test_the_enqueue_functions_ignore_a_callers_temporary_tables(roles: Roles, db: Conn) -> None:
    # The functions run with the owner's rights: a temporary `jobs` of the caller must not
    # stand in for pgjobs.jobs (pg_temp comes last in their search_path).
    with psycopg.connect(roles.dsn(roles.producer), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE jobs (LIKE pg_catalog.pg_class)")
        conn.execute("CREATE TEMP TABLE queues (name text)")
        conn.execute("SELECT pgjobs.enqueue(task => 'roles.temp')")
        conn.execute(
            "SELECT pgjobs.enqueue_many(task => 'roles.temp', kwargs => %s::jsonb[])", (["{}"],)
        )
        assert conn.execute("SELECT count(*) FROM pg_temp.queues").fetchone() == (0,)
    assert len(_ids(db, "roles.temp")) == 2


def test_a_producer_enqueues_inside_its_own_transaction(roles: Roles, db: Conn) -> None:
    app = pgjobs.App(roles.dsn(roles.producer))
    try:
        task = app.task(name="roles.tx")(lambda n=0: None)
        with psycopg.connect(roles.dsn(roles.producer)) as conn:
            for outcome in ("rollback", "commit"):
                ids = [task.options(conn=conn).enqueue(1)]
                ids += task.enqueue_many([{"n": 2}, {"n": 3}], conn=conn)
                row = conn.execute("SELECT pgjobs.enqueue(task => 'roles.tx')").fetchone()
                assert row is not None
                ids.append(row[0])
                row = conn.execute(
                    "SELECT pgjobs.enqueue_many(task => 'roles.tx', kwargs => ARRAY['{}']::jsonb[])"
                ).fetchone()
                assert row is not None
                ids += row[0]
                assert not _ids(db, "roles.tx"), "visible before the caller commits"
                if outcome == "rollback":
                    conn.rollback()
                    assert not _ids(db, "roles.tx")
                else:
                    conn.commit()
                    assert _ids(db, "roles.tx") == sorted(ids)
    finally:
        app.close()


def test_enqueue_many_as_a_producer_only_role(
    roles: Roles, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = pgjobs.App(roles.dsn(roles.producer))
    try:
        task = app.task(name="roles.bulk", queue="roles-bulk")(lambda n=0: None)
        ids = task.enqueue_many({"n": n} for n in range(1000))
        ids += asyncio.run(task.enqueue_many_async([{"n": n} for n in range(1000, 1010)]))
        # Several statements (one transaction) when the batch is split.
        monkeypatch.setattr(pgjobs.producer, "BATCH_ROWS", 3)
        ids += task.options(delay=timedelta(hours=1)).enqueue_many(
            [{"n": n} for n in range(1010, 1020)]
        )
        ids += asyncio.run(task.enqueue_many_async([{"n": n} for n in range(1020, 1030)]))
    finally:
        app.close()
    rows = db.execute(
        "SELECT id, (kwargs->>'n')::int, queue, run_at > now() + interval '50 minutes'"
        " FROM pgjobs.jobs WHERE task = 'roles.bulk' ORDER BY id"
    ).fetchall()
    assert [row[0] for row in rows] == ids == sorted(ids)
    assert [row[1] for row in rows] == list(range(1030))
    assert {row[2] for row in rows} == {"roles-bulk"}
    assert [row[3] for row in rows] == [False] * 1010 + [True] * 10 + [False] * 10
    assert db.execute("SELECT 1 FROM pgjobs.queues WHERE name = 'roles-bulk'").fetchone()


def test_a_split_enqueue_many_is_all_or_nothing(
    roles: Roles, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgjobs.producer, "BATCH_ROWS", 2)
    app = pgjobs.App(roles.dsn(roles.producer))
    try:
        task = app.task(name="roles.split")(lambda n=0: None)
        items: list[dict[str, Any]] = [{"n": n} for n in range(5)]
        items[4] = {"n": "\x00"}  # jsonb refuses NUL: the third statement fails
        with pytest.raises(pgjobs.PgJobsError):
            task.enqueue_many(items)
        with (
            psycopg.connect(roles.dsn(roles.producer), autocommit=True) as conn,
            pytest.raises(pgjobs.PgJobsError),
        ):
            task.enqueue_many(items, conn=conn)
    finally:
        app.close()
    assert not _ids(db, "roles.split")


SCHEDULE = (
    "INSERT INTO pgjobs.schedules (name, task, queue, code_expression)"
    " VALUES ('roles-schedule', 'roles.tick', 'default', '@every 1h')"
)


def test_the_worker_role_cannot_change_a_schedules_operator_columns(roles: Roles, db: Conn) -> None:
    db.execute(SCHEDULE)
    with psycopg.connect(roles.dsn(roles.worker), autocommit=True) as conn:
        for statement in [
            "UPDATE pgjobs.schedules SET enabled = false",
            "UPDATE pgjobs.schedules SET override_expression = '@every 1m'",
            "UPDATE pgjobs.schedules SET override_timezone = 'Europe/Paris'",
            "UPDATE pgjobs.schedules SET updated_at = now(), updated_by = 'evil'",
            "INSERT INTO pgjobs.schedules (name, task, queue, code_expression, enabled)"
            " VALUES ('roles-off', 'roles.tick', 'default', '@every 1h', false)",
            "INSERT INTO pgjobs.schedules (name, task, queue, code_expression,"
            " override_expression) VALUES ('roles-o', 'roles.tick', 'default', '@every 1h',"
            " '@every 1m')",
            "DELETE FROM pgjobs.schedules",
        ]:
            _refused(conn, statement)
        # What the cron code writes is still allowed (the cron tests run it for real).
        conn.execute(
            "UPDATE pgjobs.schedules SET code_expression = '@every 2h', seen_at = now(),"
            " next_tick = NULL, last_tick = now(), revision = revision + 1"
        )
    row = db.execute("SELECT enabled, override_expression FROM pgjobs.schedules").fetchone()
    assert row == (True, None)


def test_roles_sql_takes_back_what_older_versions_granted(roles: Roles, db: Conn) -> None:
    # The grants of the previous roles.sql, then a re-run of the current one.
    for statement in [
        "GRANT INSERT ON pgjobs.jobs TO {p}",
        "GRANT SELECT (id, dedup_key) ON pgjobs.jobs TO {p}",
        "GRANT USAGE ON SEQUENCE pgjobs.job_id_seq TO {p}",
        "GRANT INSERT ON pgjobs.queues TO {p}",
        "GRANT SELECT, INSERT, UPDATE ON pgjobs.schedules TO {w}",
    ]:
        db.execute(
            sql.SQL(statement).format(
                p=sql.Identifier(roles.producer_role), w=sql.Identifier(roles.worker_role)
            )
        )
    apply_roles_sql(
        roles.admin_dsn, producer_role=roles.producer_role, worker_role=roles.worker_role
    )
    checks = db.execute(
        "SELECT has_table_privilege(%(p)s, 'pgjobs.jobs', 'INSERT'),"
        " has_any_column_privilege(%(p)s, 'pgjobs.jobs', 'SELECT'),"
        " has_sequence_privilege(%(p)s, 'pgjobs.job_id_seq', 'USAGE'),"
        " has_table_privilege(%(p)s, 'pgjobs.queues', 'INSERT'),"
        " has_column_privilege(%(w)s, 'pgjobs.schedules', 'enabled', 'UPDATE'),"
        " has_column_privilege(%(w)s, 'pgjobs.schedules', 'next_tick', 'UPDATE')",
        {"p": roles.producer_role, "w": roles.worker_role},
    ).fetchone()
    assert checks == (False, False, False, False, False, True)


def test_a_producer_holding_the_old_migrate_key_does_not_block_migrate(
    roles: Roles, dsn: str
) -> None:
    from pgjobs import db as pgdb

    key = pgdb.lock_namespace("pgjobs", "migrate")
    with psycopg.connect(roles.dsn(roles.producer), autocommit=True) as squatter:
        squatter.execute("SELECT pg_advisory_lock(%s)", (key,))
        # lock_timeout: the old code would wait forever on the key; this fails it instead.
        params = conninfo_to_dict(dsn)
        params["options"] = "-c lock_timeout=5s"
        app = pgjobs.App(make_conninfo("", **params))
        try:
            assert app.migrate() == []
        finally:
            app.close()
