"""The App the chaos tests run with `pgjobs worker chaosapp:app` (DSN from PGJOBS_DSN).

Every handler run is recorded outside Postgres, so that the record survives the faults the
tests inject (database restarts, cut connections, kill -9): each worker process appends lines
to `$PGJOBS_CHAOS_DIR/runs-<pid>.log` with one `write(2)` per line (O_APPEND: lines never mix):

    S <job> <attempt> <worker id> <pid> <locked> <time>    the handler started
    E <job> <attempt> <pid> <time>                         it returned normally
    C <job> <attempt> <pid> <time>                         it was cancelled (shutdown, timeout)

For its whole run a handler holds an open-file-description lock on byte <job id> of
`$PGJOBS_CHAOS_DIR/probe.lock`. OFD locks conflict between any two opens of the file, in one
process or in two, and the kernel drops them when the process dies, so `locked=0` in a start
line means that another run of the same job was still running at that moment: the job ran
concurrently with itself. The probe does not depend on Postgres at all.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import threading
import time
from datetime import timedelta
from types import TracebackType

import pgjobs

app = pgjobs.App()

WORK = "chaos.work"
WORK_ASYNC = "chaos.work_async"
HANG_SYNC = "chaos.hang_sync"
HANG_ASYNC = "chaos.hang_async"
LEAK = "chaos.leak"
EXIT = "chaos.exit"
BLOB = "chaos.blob"
TICK = "chaos.tick"
STALL = "chaos.stall"
TICK_SCHEDULE = "chaos-tick"

WORK_MAX_ATTEMPTS = 25  # the drains must end succeeded: no job can be unlucky that often
POISON_MAX_ATTEMPTS = 2
EXIT_MAX_ATTEMPTS = 3
HANG_TIMEOUT = 1.0
LEAK_STEP = 8 * 1024 * 1024
LEAK_CAP = 2 * 1024 * 1024 * 1024  # the test's OOM watchdog kills the process long before

_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64/arm64: type, whence, start, len, pid
_log_lock = threading.Lock()
_log: dict[str, int] = {}  # pid, fd of this process's run log
_leaked: list[bytes] = []


def _dir() -> str:
    return os.environ["PGJOBS_CHAOS_DIR"]


def _write(line: str) -> None:
    with _log_lock:
        if _log.get("pid") != os.getpid():
            path = os.path.join(_dir(), f"runs-{os.getpid()}.log")
            _log["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _log["pid"] = os.getpid()
        fd = _log["fd"]
    os.write(fd, line.encode())


class Run:
    """Records one handler run and holds the concurrency probe for its duration."""

    def __init__(self) -> None:
        self.job = pgjobs.current_job()
        self.fd = -1

    def __enter__(self) -> Run:
        job = self.job
        self.fd = os.open(os.path.join(_dir(), "probe.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flock = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, job.id, 1, 0)
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, flock)
            locked = 1
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            locked = 0
        _write(
            f"S {job.id} {job.attempt} {job.worker_id} {os.getpid()} {locked} {time.time():.6f}\n"
        )
        return self

    def _mark(self, kind: str) -> None:
        _write(f"{kind} {self.job.id} {self.job.attempt} {os.getpid()} {time.time():.6f}\n")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._mark("E")
        elif issubclass(exc_type, asyncio.CancelledError):
            self._mark("C")
        os.close(self.fd)  # releases the probe lock


@app.task(name=BLOB)
def blob(data: str) -> None:
    """Receives a big argument and checks it arrived whole."""
    with Run():
        if data != data[0] * len(data):
            raise ValueError("the payload arrived corrupted")


def _duration(ms: float, first_attempt_ms: float | None) -> float:
    if first_attempt_ms is not None and pgjobs.current_job().attempt == 1:
        return first_attempt_ms / 1000
    return ms / 1000


@app.task(name=WORK, max_attempts=WORK_MAX_ATTEMPTS)
def work(ms: float = 0.0, first_attempt_ms: float | None = None) -> None:
    """Sleep `ms` milliseconds in a worker thread (`first_attempt_ms` on attempt 1)."""
    with Run():
        seconds = _duration(ms, first_attempt_ms)
        if seconds:
            time.sleep(seconds)


@app.task(name=WORK_ASYNC, max_attempts=WORK_MAX_ATTEMPTS)
async def work_async(
    ms: float = 0.0, first_attempt_ms: float | None = None, hold: bool = False
) -> None:
    """`work` on the event loop; with `hold`, first wait (up to two minutes) until the test
    creates the file `release` in the chaos directory."""
    with Run():
        release = os.path.join(_dir(), "release")
        deadline = time.monotonic() + 120
        # The test can only signal into the worker process through the file system.
        while hold and not os.path.exists(release) and time.monotonic() < deadline:  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.05)
        seconds = _duration(ms, first_attempt_ms)
        if seconds:
            await asyncio.sleep(seconds)


@app.task(name=STALL, max_attempts=WORK_MAX_ATTEMPTS)
async def stall(seconds: float) -> None:
    """On attempt 1, blocks the event loop for `seconds` (`time.sleep` in an async handler,
    as buggy handlers do); later attempts return at once."""
    with Run():
        if pgjobs.current_job().attempt == 1:
            time.sleep(seconds)  # noqa: ASYNC251  (blocking the loop is the fault under test)


@app.task(name=HANG_SYNC, timeout=HANG_TIMEOUT, max_attempts=POISON_MAX_ATTEMPTS)
def hang_sync() -> None:
    """Never returns: a thread cannot be stopped, so this holds its slot until the process dies."""
    with Run():
        while True:
            time.sleep(3600)


@app.task(name=HANG_ASYNC, timeout=HANG_TIMEOUT, max_attempts=POISON_MAX_ATTEMPTS)
async def hang_async() -> None:
    """Never returns by itself: the task timeout cancels it."""
    with Run():
        await asyncio.Event().wait()


@app.task(name=LEAK, max_attempts=POISON_MAX_ATTEMPTS)
def leak() -> None:
    """Leaks memory (kept in a module global, like a real leak) until the process is killed."""
    with Run():
        while sum(map(len, _leaked)) < LEAK_CAP:
            _leaked.append(b"x" * LEAK_STEP)  # written, so it is resident, not just reserved
            time.sleep(0.01)
        raise RuntimeError("leaked 2 GiB and nobody killed this process")


@app.task(name=EXIT, max_attempts=EXIT_MAX_ATTEMPTS)
def exit_process() -> None:
    """Ends the whole worker process at once, as a crashing C extension would."""
    with Run():
        os._exit(1)


if os.environ.get("PGJOBS_CHAOS_CRON"):  # only the cron test's workers: no ticks elsewhere

    @app.every(timedelta(seconds=1), name=TICK_SCHEDULE)
    @app.task(name=TICK)
    def tick() -> None:
        """A cron tick: recorded like every other run."""
        with Run():
            pass
