"""What the chaos tests share: worker processes, the run logs, and the invariant check.

Processes: every process a test starts (and every process they start in turn) is killed at
teardown, whatever happened; each gets its own application_name (`chaos-<name>-<n>`), so
that its Postgres backends can be told apart from everyone else's.

The invariant check (`check`) runs after every scenario, on the database and on the run
logs that `chaosapp` writes outside Postgres:
- no job is lost: every enqueued job is in job_history, none left in jobs;
- every job succeeded, or is dead with a reason (only where the test expects it);
- a succeeded job's handler completed; no attempt number of a job started twice, unless a
  clean shutdown handed it back (which gives the attempt back and records `released`);
- a job started more than once only for a recorded reason: its earlier run was on a worker
  that was killed or lost its connection (and the database holds the `worker_lost` record
  of that attempt), or the run was cancelled (timeout, shutdown hand-back), or it failed;
- no job ran concurrently with itself (the OFD-lock probe in chaosapp).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from proctools import descendants
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PGJOBS = Path(sys.executable).parent / "pgjobs"

Conn = psycopg.Connection[Any]

# Figures of each scenario, printed at the end of the session (see conftest.py).
FIGURES: list[tuple[str, dict[str, Any]]] = []


# --------------------------------------------------------------------------- processes


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of `pid` (VmHWM: its peak so far); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    name: str
    appname: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Exit code; fails the test (with the log) if the process is still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout}s:\n{self.output()[-3000:]}")


@dataclass
class Procs:
    """Starts processes for one test and kills every one of them (and theirs) afterwards."""

    dsn: str
    tmp: Path
    chaos_dir: Path
    started: list[Proc] = field(default_factory=list)

    def env(
        self, appname: str, dsn: str | None = None, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        env = dict(os.environ)
        env.update(extra or {})
        env["PGJOBS_DSN"] = self.dsn if dsn is None else dsn
        env["PGAPPNAME"] = appname
        env["PGJOBS_CHAOS_DIR"] = str(self.chaos_dir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env.pop("COLUMNS", None)
        return env

    def start(
        self,
        argv: list[str],
        *,
        name: str,
        dsn: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        number = len(self.started)
        appname = f"chaos-{name}-{number}"
        log = self.tmp / f"{name}-{number}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=HERE,
                env=self.env(appname, dsn, env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(popen, log, name, appname)
        self.started.append(proc)
        return proc

    def worker(
        self,
        *args: str,
        name: str = "worker",
        dsn: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """`pgjobs worker chaosapp:app ARGS`."""
        argv = [str(PGJOBS), "worker", "chaosapp:app", *args]
        return self.start(argv, name=name, dsn=dsn, env=env)

    def script_worker(self, *args: str, name: str = "worker", dsn: str | None = None) -> Proc:
        """A worker with settings the CLI does not expose (see run_worker.py)."""
        argv = [sys.executable, str(HERE / "run_worker.py"), *args]
        return self.start(argv, name=name, dsn=dsn)

    def cleanup(self) -> None:
        doomed: list[int] = []
        for proc in self.started:
            doomed += descendants(proc.pid)
        for proc in self.started:
            if proc.running():
                proc.popen.kill()
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)
        for proc in self.started[-12:]:
            print(
                f"----- {proc.name} ({proc.appname}, pid {proc.pid}, exit {proc.popen.returncode})"
            )
            print(proc.output()[-2500:])


# --------------------------------------------------------------------------- database
@dataclass(frozen=True)
class Logins:
    """Login roles in fresh producer and worker roles (the `logins` fixture)."""

    producer: str
    worker: str

    def dsn(self, dsn: str, user: str) -> str:
        return make_conninfo(dsn, user=user)


def scalar(db: Conn, query: str, params: Any = None) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Poll `predicate` until true; returns the seconds it took, fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


def worker_ids(db: Conn) -> dict[int, set[int]]:
    """pid -> ids of the registered workers (a process that lost its session has two for a
    moment: the new one and the lost one, until a rescuer removes it)."""
    found: dict[int, set[int]] = defaultdict(set)
    for pid, worker_id in db.execute("SELECT pid, id FROM pgjobs.workers").fetchall():
        found[pid].add(worker_id)
    return found


def running_on(db: Conn, workers: Iterable[int]) -> set[int]:
    rows = db.execute(
        "SELECT id FROM pgjobs.jobs WHERE state = 'running' AND worker_id = ANY(%s)",
        (list(workers),),
    ).fetchall()
    return {row[0] for row in rows}


def jobs_left(db: Conn) -> int:
    return int(scalar(db, "SELECT count(*) FROM pgjobs.jobs"))


def finished(db: Conn) -> int:
    return int(scalar(db, "SELECT count(*) FROM pgjobs.job_history"))


def active(db: Conn, appname: str) -> bool:
    """Whether a backend of the process with this application_name runs a statement."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'"
    return bool(scalar(db, query, (appname,)))


def terminate(db: Conn, appname: str) -> int:
    """pg_terminate_backend of every backend of one process; returns how many."""
    query = (
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = %s"
    )
    return int(scalar(db, query, (appname,)))


def freeze(db: Conn, proc: Proc, timeout: float = 10) -> bool:
    """SIGSTOP `proc` and wait until none of its statements is still executing, so that what
    it has committed is final until it is continued or killed (an unsynced pipeline is rolled
    back by a kill). False (and the process continued) if that did not happen in time."""
    proc.signal(signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while active(db, proc.appname):
        if time.monotonic() > deadline:
            proc.signal(signal.SIGCONT)
            return False
        time.sleep(0.02)
    return True


def enqueue_jobs(
    db: Conn, jobs: list[tuple[str, dict[str, Any]]], queue: str | None = None
) -> list[int]:
    """Enqueue (task name, kwargs) pairs of chaosapp's tasks with COPY, in `db`'s current
    transaction (autocommit: at once); returns the ids in the order given."""
    import chaosapp

    by_task: dict[str, list[int]] = defaultdict(list)
    for index, (task, _) in enumerate(jobs):
        by_task[task].append(index)
    placed: dict[int, int] = {}
    for task, indexes in by_task.items():
        call = chaosapp.app.tasks[task].options(conn=db, queue=queue)
        new = call.enqueue_many([jobs[i][1] for i in indexes])
        placed.update(zip(indexes, new, strict=True))
    return [placed[i] for i in range(len(jobs))]


class ResilientConn:
    """An autocommit connection for the test's own queries that reconnects (for up to a
    minute) when the server restarts under it."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn: Conn | None = None

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor[Any]:
        deadline = time.monotonic() + 60
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                return self._conn.execute(query, params)
            except psycopg.OperationalError:
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None


# --------------------------------------------------------------------------- run logs
@dataclass(frozen=True)
class Start:
    job: int
    attempt: int
    worker: int
    pid: int
    locked: bool
    at: float


@dataclass(frozen=True)
class Mark:
    kind: str  # E (returned) or C (cancelled)
    job: int
    attempt: int
    pid: int
    at: float


@dataclass
class Runs:
    starts: dict[int, list[Start]] = field(default_factory=lambda: defaultdict(list))
    marks: dict[int, list[Mark]] = field(default_factory=lambda: defaultdict(list))

    def ends(self, job: int) -> list[Mark]:
        return [m for m in self.marks.get(job, []) if m.kind == "E"]

    def cancels(self, job: int) -> list[Mark]:
        return [m for m in self.marks.get(job, []) if m.kind == "C"]

    def completed(self) -> int:
        return sum(len(self.ends(job)) for job in self.marks)

    def started_jobs(self) -> set[int]:
        return set(self.starts)


def read_runs(chaos_dir: Path) -> Runs:
    runs = Runs()
    for path in sorted(chaos_dir.glob("runs-*.log")):
        lines = path.read_text().split("\n")
        for number, line in enumerate(lines):
            if not line:
                continue
            parts = line.split()
            try:
                if parts[0] == "S":
                    job, attempt, worker, pid, locked = map(int, parts[1:6])
                    runs.starts[job].append(
                        Start(job, attempt, worker, pid, bool(locked), float(parts[6]))
                    )
                else:
                    job, attempt, pid = map(int, parts[1:4])
                    runs.marks[job].append(Mark(parts[0], job, attempt, pid, float(parts[4])))
            except (IndexError, ValueError):
                # Only the last line of a killed process's log may be torn.
                assert number == len(lines) - 1, f"{path}: bad line {line!r}"
    for starts in runs.starts.values():
        starts.sort(key=lambda s: (s.attempt, s.at))
    for marks in runs.marks.values():
        marks.sort(key=lambda m: (m.attempt, m.at))
    return runs


# --------------------------------------------------------------------------- invariants
@dataclass
class Figures:
    jobs: int = 0
    succeeded: int = 0
    dead: int = 0
    runs: int = 0  # handler starts
    reruns: int = 0  # jobs whose handler started more than once
    duplicates: int = 0  # jobs whose handler ran to completion more than once
    concurrent: int = 0  # starts that found another run of the same job still running
    lost: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def errors_of(db: Conn, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    rows = db.execute(
        "SELECT id, errors FROM pgjobs.job_history WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return dict(rows)


def check(
    db: Conn,
    ids: list[int],
    runs: Runs,
    *,
    lost_workers: set[int] | frozenset[int] = frozenset(),
    rerun_allowed: set[int] | None = None,
    dead_allowed: set[int] | frozenset[int] = frozenset(),
) -> Figures:
    """Assert the invariants (see the module docstring) for the jobs `ids`; returns figures.

    `lost_workers`: ids of workers that were killed or lost their session during the test.
    `rerun_allowed`: if given, the only jobs that may have started more than once (for
    kill -9, the jobs the victims held when they were killed).
    `dead_allowed`: jobs that may end dead (poison jobs); every other job must succeed.
    """
    figures = Figures(jobs=len(ids))
    history = _check_history(db, ids, runs, dead_allowed, figures)
    _check_reruns(history, runs, lost_workers, rerun_allowed, figures)
    concurrent = [s for starts in runs.starts.values() for s in starts if not s.locked]
    figures.concurrent = len(concurrent)
    assert not concurrent, f"jobs ran concurrently with themselves: {concurrent[:10]}"
    return figures


History = dict[int, tuple[str, int, list[dict[str, Any]]]]


def _check_history(
    db: Conn, ids: list[int], runs: Runs, dead_allowed: Iterable[int], figures: Figures
) -> History:
    """Nothing lost, nothing left, every job succeeded or dead with a reason."""
    wanted = set(ids)
    assert len(wanted) == len(ids), "duplicate ids enqueued"
    left = db.execute(
        "SELECT id, state::text, worker_id FROM pgjobs.jobs WHERE id = ANY(%s) LIMIT 20", (ids,)
    ).fetchall()
    assert not left, f"jobs still queued or running: {left}"
    rows = db.execute(
        "SELECT id, state::text, attempt, errors FROM pgjobs.job_history WHERE id = ANY(%s)",
        (ids,),
    ).fetchall()
    history: History = {job: (state, attempt, errors) for job, state, attempt, errors in rows}
    missing = wanted - set(history)
    figures.lost = len(missing)
    assert not missing, f"{len(missing)} job(s) LOST: {sorted(missing)[:20]}"

    states = Counter(state for state, _, _ in history.values())
    figures.succeeded = states["succeeded"]
    figures.dead = states["dead"]
    assert set(states) <= {"succeeded", "dead"}, f"unexpected states: {states}"
    for job, (state, _, errors) in history.items():
        if state == "dead":
            assert job in set(dead_allowed), f"job {job} is dead: {errors}"
            assert errors, f"dead job {job} has no error record"
            assert errors[-1].get("kind"), f"dead job {job} without a reason: {errors[-1]}"
            assert errors[-1].get("error"), f"dead job {job} without a reason: {errors[-1]}"
        else:
            assert runs.ends(job), f"job {job} succeeded but its handler never returned"
    phantom = (set(runs.starts) | set(runs.marks)) - wanted
    assert not phantom, f"runs of jobs that were never enqueued here: {sorted(phantom)[:20]}"
    return history


def _check_reruns(
    history: History,
    runs: Runs,
    lost_workers: Iterable[int],
    rerun_allowed: set[int] | None,
    figures: Figures,
) -> None:
    """Each attempt started once; each earlier run of a job that ran again has a reason."""
    lost = set(lost_workers)
    unexplained: list[str] = []
    for job, starts in runs.starts.items():
        figures.runs += len(starts)
        _, final_attempt, errors = history[job]
        attempts = [s.attempt for s in starts]
        # An attempt starts again only after a clean hand-back, which gives it back and
        # says so in a `released` record of that attempt.
        released = Counter(e.get("attempt") for e in errors if e.get("kind") == "released")
        for attempt, count in Counter(attempts).items():
            assert count - 1 <= released[attempt], (
                f"job {job}: attempt {attempt} started {count} times, handed back "
                f"{released[attempt]} times: {starts}"
            )
        assert max(attempts) <= final_attempt, f"job {job}: ran attempt {max(attempts)}"
        if len(runs.ends(job)) > 1:
            figures.duplicates += 1
        if len(starts) == 1:
            continue
        figures.reruns += 1
        if rerun_allowed is not None and job not in rerun_allowed:
            unexplained.append(f"job {job} ran {len(starts)} times but no victim held it")
        recorded = {(e.get("attempt"), e.get("kind")) for e in errors}
        cancelled = {m.attempt for m in runs.cancels(job)}
        for start in starts[:-1]:
            if start.worker in lost and (start.attempt, "worker_lost") in recorded:
                continue
            if start.attempt in cancelled:
                continue
            if recorded & {(start.attempt, k) for k in ("exception", "timeout", "retry")}:
                continue
            unexplained.append(
                f"job {job}: attempt {start.attempt} on worker {start.worker} was run again "
                f"without a recorded reason (errors: {errors})"
            )
    assert not unexplained, "\n".join(unexplained[:20])


def no_worker_rows(db: Conn) -> None:
    rows = db.execute("SELECT id, pid FROM pgjobs.workers").fetchall()
    assert not rows, f"workers still registered after every process exited: {rows}"


def record(name: str, figures: Figures, **extra: Any) -> None:
    data: dict[str, Any] = figures.as_dict()
    data.update(extra)
    FIGURES.append((name, data))
    print(f"CHAOS {name}: " + ", ".join(f"{k}={v}" for k, v in data.items()))
