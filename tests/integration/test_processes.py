"""Real worker processes against real Postgres: drain, kill -9, SIGTERM, supervisor, CLI errors.

Workers run as `pgjobs worker procapp:app ...` (the console script next to this interpreter),
with PGJOBS_DSN pointing at the test's database. The handlers in `procapp` record every run
in the user table `runs` and probe for concurrent runs of one job with an advisory lock.
Every process a test starts, including a supervisor's children, is killed in teardown.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from proctools import alive, descendants

import pgjobs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PGJOBS = Path(sys.executable).parent / "pgjobs"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import procapp  # noqa: E402

Conn = psycopg.Connection[Any]


# --------------------------------------------------------------------------- processes


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    name: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Exit code; fails the test (with the log) if the process is still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout}s:\n{self.output()[-3000:]}")


@dataclass
class Procs:
    """Starts pgjobs processes for one test and kills every one of them afterwards."""

    dsn: str
    tmp: Path
    started: list[Proc] = field(default_factory=list)
    extra_pids: set[int] = field(default_factory=set)

    def env(self, dsn: str | None = None, name: str = "pgjobs") -> dict[str, str]:
        env = dict(os.environ)
        env["PGJOBS_DSN"] = self.dsn if dsn is None else dsn
        env["PGAPPNAME"] = f"pgjobs-test-{name}"  # tells this process's backends apart
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env.pop("COLUMNS", None)  # errors must stay on one line at the default width, too
        return env

    def start(self, *args: str, name: str = "worker", dsn: str | None = None) -> Proc:
        log = self.tmp / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [str(PGJOBS), *args],
                cwd=ROOT,
                env=self.env(dsn, name),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(popen, log, name)
        self.started.append(proc)
        return proc

    def worker(self, *args: str, name: str = "worker") -> Proc:
        return self.start("worker", "procapp:app", *args, name=name)

    def run(self, *args: str, dsn: str | None = None, timeout: float = 30) -> tuple[int, str]:
        """Run a command to completion; returns (exit code, stdout+stderr)."""
        proc = self.start(*args, name="cmd", dsn=dsn)
        return proc.wait(timeout), proc.output()

    def cleanup(self) -> None:
        doomed: list[int] = []
        for proc in self.started:
            if proc.popen.poll() is None:
                doomed += descendants(proc.pid)
        for pid in self.extra_pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"pgjobs" in cmdline or b"multiprocessing" in cmdline:
                doomed.append(pid)
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.popen.kill()
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)
            print(f"----- {proc.name} (pid {proc.pid}, exit {proc.popen.returncode})")
            print(proc.output()[-4000:])


@pytest.fixture
def procs(dsn: str, tmp_path: Path) -> Iterator[Procs]:
    manager = Procs(dsn, tmp_path)
    try:
        yield manager
    finally:
        manager.cleanup()


# --------------------------------------------------------------------------- database
@pytest.fixture
def runs(db: Conn) -> Conn:
    """Creates the `runs` table the procapp handlers write to; returns the db connection."""
    db.execute(procapp.RUNS_TABLE)
    return db


@pytest.fixture
def tasks(app: pgjobs.App) -> dict[str, pgjobs.Task[Any, Any]]:
    """The procapp handlers registered on the test's own App, for enqueueing."""
    return {name: app.task(name=name)(task.fn) for name, task in procapp.app.tasks.items()}


def scalar(db: Conn, query: str, params: Any = None) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    """Poll `predicate` until true; returns the seconds it took, fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def worker_ids(db: Conn, procs: Procs | None = None) -> dict[int, int]:
    """pid -> worker id of the registered workers."""
    rows = db.execute("SELECT pid, id FROM pgjobs.workers").fetchall()
    if procs is not None:
        procs.extra_pids.update(pid for pid, _ in rows)
    return dict(rows)


def wait_registered(db: Conn, pid: int, timeout: float = 30) -> int:
    wait_for(f"worker pid {pid} to register", lambda: pid in worker_ids(db), timeout)
    return worker_ids(db)[pid]


def running_on(db: Conn, worker_id: int) -> set[int]:
    rows = db.execute(
        "SELECT id FROM pgjobs.jobs WHERE state = 'running' AND worker_id = %s", (worker_id,)
    ).fetchall()
    return {row[0] for row in rows}


def started_runs(db: Conn) -> int:
    return int(scalar(db, "SELECT count(*) FROM runs"))


def jobs_left(db: Conn) -> int:
    return int(scalar(db, "SELECT count(*) FROM pgjobs.jobs"))


def history_states(db: Conn, ids: list[int]) -> dict[int, tuple[str, int]]:
    rows = db.execute(
        "SELECT id, state::text, attempt FROM pgjobs.job_history WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return {job_id: (state, attempt) for job_id, state, attempt in rows}


def run_counts(db: Conn) -> dict[int, int]:
    rows = db.execute("SELECT job_id, count(*) FROM runs GROUP BY job_id").fetchall()
    return dict(rows)


def active(db: Conn, name: str) -> bool:
    """Whether a backend of the process started as `name` is executing a statement."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'"
    return bool(scalar(db, query, (f"pgjobs-test-{name}",)))


def violations(db: Conn) -> int:
    return int(scalar(db, "SELECT count(*) FROM runs WHERE NOT locked"))


def queued_jobs(db: Conn) -> dict[int, tuple[str, int | None, int]]:
    rows = db.execute("SELECT id, state::text, worker_id, attempt FROM pgjobs.jobs").fetchall()
    return {job_id: (state, worker, attempt) for job_id, state, worker, attempt in rows}


# --------------------------------------------------------------------------- 1, 2: drain
@pytest.mark.timeout(240)
def test_four_processes_drain_10k_jobs_exactly_once(
    procs: Procs, runs: Conn, tasks: dict[str, pgjobs.Task[Any, Any]]
) -> None:
    db = runs
    ids = tasks[procapp.RECORD].enqueue_many([{} for _ in range(10_000)])
    assert len(set(ids)) == 10_000

    worker = procs.worker("--processes", "4", "--burst", "--concurrency", "20")
    assert worker.wait(180) == 0

    assert jobs_left(db) == 0
    states = history_states(db, ids)
    assert len(states) == 10_000
    assert {state for state, _ in states.values()} == {"succeeded"}
    assert {attempt for _, attempt in states.values()} == {1}
    assert started_runs(db) == 10_000
    counts = run_counts(db)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, "a job ran twice although no worker crashed"
    assert scalar(db, "SELECT count(*) FROM runs WHERE finished_at IS NULL") == 0
    assert violations(db) == 0, "two processes ran the same job at the same time"
    per_pid = dict(db.execute("SELECT pid, count(*) FROM runs GROUP BY pid").fetchall())
    print(f"jobs per worker process: {sorted(per_pid.values(), reverse=True)}")
    assert len(per_pid) > 1, "only one worker process did any work"
    assert worker.pid not in per_pid, "the supervisor itself ran jobs"
    assert scalar(db, "SELECT count(*) FROM pgjobs.workers") == 0, "workers left registered"


# --------------------------------------------------------------------------- 3: kill -9
@pytest.mark.timeout(150)
def test_kill_9_mid_batch_loses_nothing_and_is_rescued(
    procs: Procs, runs: Conn, tasks: dict[str, pgjobs.Task[Any, Any]]
) -> None:
    db = runs
    victim = procs.worker("--concurrency", "10", name="victim")
    survivor = procs.worker("--concurrency", "10", name="survivor")
    victim_id = wait_registered(db, victim.pid)
    wait_registered(db, survivor.pid)

    rng = random.Random(7)
    ids = tasks[procapp.RECORD].enqueue_many(
        [{"sleep": rng.uniform(0.005, 0.02)} for _ in range(3_000)]
    )
    wait_for("the first 300 runs", lambda: started_runs(db) >= 300, 60)

    # Freeze the victim so that the set of jobs it holds cannot change between reading it
    # and killing it: once none of its statements is still executing on the server, what
    # it has committed is final (an unsynced pipeline is rolled back by the kill).
    in_flight: set[int] = set()
    for _ in range(100):
        victim.signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while active(db, "victim") and time.monotonic() < deadline:
            time.sleep(0.02)
        if active(db, "victim"):  # frozen with a statement that waits on it: thaw, try again
            victim.signal(signal.SIGCONT)
            time.sleep(0.05)
            continue
        in_flight = running_on(db, victim_id)
        if in_flight:
            break
        victim.signal(signal.SIGCONT)
        time.sleep(0.05)
    assert in_flight, "the victim never had a running job"
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert victim.wait(10) == -signal.SIGKILL

    wait_for("the killed worker's jobs to be rescued", lambda: not running_on(db, victim_id), 30)
    rescue = time.monotonic() - killed_at
    print(f"rescue of {len(in_flight)} job(s) observed {rescue:.2f}s after kill -9")
    assert rescue < 15
    assert victim_id not in worker_ids(db).values(), "the dead worker is still registered"

    wait_for("the survivor to finish every job", lambda: jobs_left(db) == 0, 90)
    assert survivor.popen.poll() is None, "the survivor died"

    states = history_states(db, ids)
    assert len(states) == 3_000, "jobs were lost"
    assert {state for state, _ in states.values()} == {"succeeded"}
    assert {job_id for job_id, (_, attempt) in states.items() if attempt != 1} == in_flight
    assert {attempt for job_id, (_, attempt) in states.items() if job_id in in_flight} == {2}
    counts = run_counts(db)
    assert set(counts) == set(ids)
    duplicates = {job_id for job_id, n in counts.items() if n > 1}
    print(f"{len(duplicates)} job(s) ran twice, of {len(in_flight)} running at the kill")
    assert duplicates <= in_flight, "a job not running on the killed worker ran twice"
    assert max(counts.values()) <= 2
    unfinished = db.execute("SELECT job_id, pid FROM runs WHERE finished_at IS NULL").fetchall()
    assert {job_id for job_id, _ in unfinished} <= in_flight
    assert {pid for _, pid in unfinished} <= {victim.pid}
    assert violations(db) == 0, "a job ran twice at the same time"

    survivor.signal(signal.SIGTERM)
    assert survivor.wait(30) == 0


# --------------------------------------------------------------------------- 4: SIGTERM
@pytest.mark.timeout(90)
def test_sigterm_lets_running_jobs_finish_and_leaves_the_rest_queued(
    procs: Procs, runs: Conn, tasks: dict[str, pgjobs.Task[Any, Any]]
) -> None:
    db = runs
    ids = tasks[procapp.RECORD].enqueue_many([{"sleep": 2.0} for _ in range(6)])
    worker = procs.worker("--concurrency", "3")
    wait_for("three jobs to start", lambda: started_runs(db) == 3, 30)
    started = {row[0] for row in db.execute("SELECT job_id FROM runs").fetchall()}

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0

    assert started == set(ids[:3])
    states = history_states(db, ids)
    assert states == dict.fromkeys(ids[:3], ("succeeded", 1))
    assert scalar(db, "SELECT count(*) FROM runs WHERE finished_at IS NULL") == 0
    assert started_runs(db) == 3, "the worker started jobs after SIGTERM"
    assert queued_jobs(db) == dict.fromkeys(ids[3:], ("queued", None, 0))
    assert scalar(db, "SELECT count(*) FROM pgjobs.workers") == 0


@pytest.mark.timeout(90)
def test_sigterm_hands_back_async_jobs_that_overrun_the_grace(
    procs: Procs, runs: Conn, tasks: dict[str, pgjobs.Task[Any, Any]]
) -> None:
    db = runs
    ids = tasks[procapp.RECORD_ASYNC].enqueue_many([{"sleep": 10.0} for _ in range(5)])
    worker = procs.worker("--concurrency", "3", "--shutdown-grace", "0.5")
    wait_for("three jobs to start", lambda: started_runs(db) == 3, 30)

    worker.signal(signal.SIGTERM)
    # The handlers sleep 10s: exiting well before means they were cancelled and handed back.
    assert worker.wait(8) == 0

    assert history_states(db, ids) == {}
    # Handed back, the started jobs get their attempt back: all are as if never run.
    assert scalar(db, "SELECT count(*) FROM runs") == 3
    assert queued_jobs(db) == {job_id: ("queued", None, 0) for job_id in ids}
    assert scalar(db, "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL") == 0
    assert scalar(db, "SELECT count(*) FROM pgjobs.workers") == 0


def _start_rescuer(procs: Procs, db: Conn) -> Proc:
    """A worker that claims nothing here (its queue is empty) but rescues lost workers' jobs."""
    standby = procs.worker("--queue", "standby", name="standby")
    wait_registered(db, standby.pid)
    return standby


@pytest.mark.timeout(90)
def test_sigterm_exits_promptly_when_sync_jobs_overrun_the_grace(
    procs: Procs, runs: Conn, tasks: dict[str, pgjobs.Task[Any, Any]]
) -> None:
    db = runs
    ids = tasks[procapp.RECORD].enqueue_many([{"sleep": 10.0} for _ in range(2)])
    worker = procs.worker("--concurrency", "2", "--shutdown-grace", "0.5")
    worker_id = wait_registered(db, worker.pid)
    wait_for("both jobs to start", lambda: started_runs(db) == 2, 30)

    worker.signal(signal.SIGTERM)
    assert worker.wait(8) == 0  # threads cannot be stopped: the process leaves them behind
    # Nothing was acked or handed back: the jobs wait for a rescue.
    assert queued_jobs(db) == dict.fromkeys(ids, ("running", worker_id, 1))

    exited = time.monotonic()
    standby = _start_rescuer(procs, db)
    wait_for(
        "the rescue of the abandoned jobs",
        lambda: queued_jobs(db) == dict.fromkeys(ids, ("queued", None, 1)),
        30,
    )
    print(f"abandoned sync jobs rescued {time.monotonic() - exited:.2f}s after the worker exited")
    kinds = db.execute(
        "SELECT errors->-1->>'kind' FROM pgjobs.jobs WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    assert kinds == [("worker_lost",), ("worker_lost",)]
    assert history_states(db, ids) == {}
    standby.signal(signal.SIGTERM)
    assert standby.wait(30) == 0


@pytest.mark.timeout(90)
def test_second_sigterm_exits_at_once_and_rescue_covers_the_jobs(
    procs: Procs, runs: Conn, tasks: dict[str, pgjobs.Task[Any, Any]]
) -> None:
    db = runs
    ids = tasks[procapp.RECORD].enqueue_many([{"sleep": 10.0} for _ in range(2)])
    worker = procs.worker("--concurrency", "2")  # default grace: 30s
    wait_registered(db, worker.pid)
    wait_for("both jobs to start", lambda: started_runs(db) == 2, 30)

    worker.signal(signal.SIGTERM)
    wait_for("the drain to begin", lambda: "waiting up to" in worker.output(), 10)
    assert worker.popen.poll() is None, "the worker did not wait for its running jobs"
    worker.signal(signal.SIGTERM)
    print(f"exit code after a second SIGTERM: {worker.wait(5)}")  # non-zero is allowed

    standby = _start_rescuer(procs, db)
    wait_for(
        "the rescue of the abandoned jobs",
        lambda: queued_jobs(db) == dict.fromkeys(ids, ("queued", None, 1)),
        30,
    )
    assert history_states(db, ids) == {}
    assert scalar(db, "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL") == 0
    standby.signal(signal.SIGTERM)
    assert standby.wait(30) == 0


# --------------------------------------------------------------------------- 5: supervisor
def _children_of(db: Conn, procs: Procs, supervisor: Proc) -> dict[int, int]:
    """pid -> worker id of the registered workers that are children of `supervisor`."""
    return {
        pid: wid for pid, wid in worker_ids(db, procs).items() if parent_of(pid) == supervisor.pid
    }


@pytest.mark.timeout(90)
def test_supervisor_sigterm_stops_both_children_and_exits_0(procs: Procs, db: Conn) -> None:
    supervisor = procs.worker("--processes", "2", name="supervisor")
    wait_for("two child workers", lambda: len(_children_of(db, procs, supervisor)) == 2, 40)
    children = list(_children_of(db, procs, supervisor))

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(40) == 0

    assert not [pid for pid in children if alive(pid)], "a child outlived the supervisor"
    assert scalar(db, "SELECT count(*) FROM pgjobs.workers") == 0


@pytest.mark.timeout(150)
def test_supervisor_restarts_a_killed_child_without_losing_jobs(
    procs: Procs, runs: Conn, tasks: dict[str, pgjobs.Task[Any, Any]]
) -> None:
    db = runs
    supervisor = procs.worker("--processes", "2", "--concurrency", "5", name="supervisor")
    wait_for("two child workers", lambda: len(_children_of(db, procs, supervisor)) == 2, 40)
    first = _children_of(db, procs, supervisor)

    ids = tasks[procapp.RECORD].enqueue_many([{"sleep": 0.02} for _ in range(1_500)])

    busy: list[tuple[int, int]] = []

    def busy_child() -> bool:
        busy[:] = [(pid, wid) for pid, wid in first.items() if running_on(db, wid)]
        return bool(busy)

    wait_for("a child to run jobs", busy_child, 30)
    victim_pid, victim_id = busy[0]
    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def restarted() -> bool:
        now = _children_of(db, procs, supervisor)
        return len(now) == 2 and victim_pid not in now

    wait_for("the supervisor to restart the killed child", restarted, 40)
    print(f"killed child replaced {time.monotonic() - killed_at:.2f}s after kill -9")
    assert "restarting" in supervisor.output()
    replacement = set(_children_of(db, procs, supervisor)) - set(first)
    assert len(replacement) == 1

    wait_for("every job to finish", lambda: jobs_left(db) == 0, 90)
    # The killed child's row goes with the rescue of its jobs, after its rescue grace.
    assert victim_id not in worker_ids(db).values()
    states = history_states(db, ids)
    assert len(states) == 1_500, "jobs were lost"
    assert {state for state, _ in states.values()} == {"succeeded"}
    counts = run_counts(db)
    assert set(counts) == set(ids)
    assert max(counts.values()) <= 2
    rerun = {job_id for job_id, (_, attempt) in states.items() if attempt == 2}
    assert {job_id for job_id, n in counts.items() if n == 2} <= rerun
    assert {attempt for _, attempt in states.values()} <= {1, 2}
    assert violations(db) == 0

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(40) == 0
    assert scalar(db, "SELECT count(*) FROM pgjobs.workers") == 0


# --------------------------------------------------------------------------- 6: CLI errors
def _one_line_error(code: int, output: str) -> str:
    assert code != 0
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("app_path", "expected"),
    [
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("procapp:no_such_app", "has no attribute 'no_such_app'"),
        ("procapp", "expected MODULE:APP"),
        ("procapp:RECORD", "not a pgjobs.App"),
    ],
)
def test_worker_with_a_bad_app_path_fails_in_one_line(
    procs: Procs, app_path: str, expected: str
) -> None:
    code, output = procs.run("worker", app_path)
    assert expected in _one_line_error(code, output)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("processes", ["1", "2"])
def test_worker_on_an_unmigrated_database_fails_in_one_line(
    procs: Procs, db: Conn, processes: str
) -> None:
    db.execute("DROP SCHEMA pgjobs CASCADE")
    code, output = procs.run("worker", "procapp:app", "--processes", processes)
    line = _one_line_error(code, output)
    assert "pgjobs migrate" in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("via", ["env", "option"])
def test_worker_on_an_unreachable_database_fails_without_the_password(
    procs: Procs, processes: str, via: str
) -> None:
    secret = "S3cret-Passw0rd"
    bad = f"postgresql://jobs:{secret}@127.0.0.1:1/nowhere"
    args = ["worker", "procapp:app", "--processes", processes]
    if via == "option":
        code, output = procs.run(*args, "--dsn", bad)
    else:
        code, output = procs.run(*args, dsn=bad)
    line = _one_line_error(code, output)
    assert "127.0.0.1:1/nowhere" in line
    assert secret not in output
