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
        ]:
            _refused(conn, statement)
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
