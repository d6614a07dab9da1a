"""The worker: an asyncio core that claims, runs and acks jobs.

Tasks on one event loop: the session (lock, LISTEN, heartbeat), the claim loop, the acker,
and the maintenance services (rescuer, pruner, cron scheduler). Sync handlers run in a thread
pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import psycopg

from pgjobs import db, logs
from pgjobs.backoff import Backoff
from pgjobs.clock import Clock
from pgjobs.cron import scheduler as cron  # a module: pgjobs.cron.scheduler imports us
from pgjobs.errors import PgJobsError
from pgjobs.job import Job
from pgjobs.middleware import HookChain, Middleware
from pgjobs.migrate import check_schema, current_version
from pgjobs.worker.acker import Acker
from pgjobs.worker.auditor import Auditor
from pgjobs.worker.claimer import Claimer
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.executor import Executor
from pgjobs.worker.health import Check
from pgjobs.worker.maintenance import SharedConnection
from pgjobs.worker.outcome import Kind, Outcome, describe_exception, error_record
from pgjobs.worker.pruner import Pruner
from pgjobs.worker.rescuer import Rescuer
from pgjobs.worker.session import FENCE_SHARE, Session, WorkerOutdated
from pgjobs.worker.threads import ThreadRunner
from pgjobs.worker.watchdog import LoopWatch

if TYPE_CHECKING:
    from pgjobs.app import App
    from pgjobs.worker.monitoring import Monitoring

log = logging.getLogger("pgjobs.worker")

# Retry delays of a job whose run failed outside its handler (say, an exception object that
# breaks the executor): it is retried, visibly, instead of left `running` under a live worker.
INTERNAL_ERROR_BACKOFF = Backoff(initial=5, factor=2, max=300)

# Exit status of a worker that lost its session for good while handlers it cannot stop (sync
# ones) still ran: exiting is the only way to keep their jobs from running twice at once.
# The supervisor (or the process manager) starts a fresh process.
EXIT_FENCED = 75

# A worker holds at most 3 x concurrency + this many jobs running or waiting for their
# outcome to be written: one that cannot write outcomes stops taking work instead of running
# it unrecorded. The room above `concurrency` lets the next claims overlap earlier acks
# (with 2 x, `pgjobs bench` drained about 10% slower; with 3 x, as fast as unbounded).
UNACKED_MARGIN = 100

# A background service that crashes is restarted after this long, doubling up to the max.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0


def _exit_now(code: int) -> None:
    """Exit without waiting for threads (a running sync handler would hold the exit)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Worker:
    """One worker process's job runner. `run()` blocks until shutdown."""

    def __init__(self, app: App, config: WorkerConfig | None = None, *, clock: Clock | None = None):
        self.app = app
        self.config = config or WorkerConfig()
        self.clock = clock or app.clock
        self.database = app.database
        self.q = app.database.queries
        self.channel = db.notify_channel(app.schema)
        self.lock_namespace = db.lock_namespace(app.schema, "worker")
        self._running: dict[asyncio.Task[None], Job] = {}
        self._lost_ids: set[int] = set()  # worker ids whose session was lost for good
        self._fenced_jobs: set[tuple[int, int]] = set()  # (id, attempt) rescued under us
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._timed_out = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._sync_left_running = False
        self._signals = 0
        self.exit_code = 0
        self.processed = 0
        self.monitoring: Monitoring | None = None  # with config.health_port

    # ----------------------------------------------------------------- lifecycle
    def run(self, *, install_signal_handlers: bool = True) -> None:
        asyncio.run(self.run_async(install_signal_handlers=install_signal_handlers))
        if self._sync_left_running:
            # Threads cannot be stopped and the interpreter would wait for them: exit now,
            # and the rescue of our jobs follows when our session connection closes.
            log.warning("sync handlers still running after the grace period; exiting now")
            _exit_now(self.exit_code)

    async def run_async(self, *, install_signal_handlers: bool = False) -> None:
        await self.check_schema()
        cfg = self.config
        self._loop = loop = asyncio.get_running_loop()
        threads = ThreadRunner(cfg.concurrency)
        self.executor = Executor(self.app.tasks, threads, self.clock, hooks=self._observability())
        self.acker = Acker(self.q, self._connect, self.channel, on_written=self._slot_freed.set)
        self.unacked_limit = 3 * cfg.concurrency + UNACKED_MARGIN
        self.claimer = Claimer(self.q, self._connect, self.clock, cfg.queues)
        self.session = Session(
            self.q,
            self._connect,
            lock_namespace=self.lock_namespace,
            channel=self.channel,
            queues=cfg.queues,
            concurrency=cfg.concurrency,
            heartbeat_interval=cfg.heartbeat_interval,
            rescue_grace=cfg.rescue_grace,
            on_notify=self._on_notify,
            on_connect=self._wakeup.set,
            on_fenced=self._fence,
            on_reattached=self._reattached,
            monotonic=self.clock.monotonic,
        )
        self.watch = LoopWatch(
            self.clock.monotonic,
            reattach_window=self.session.reattach_window,
            session_fd=self.session.socket_fd,
            holds_jobs=lambda: bool(self._running),
            on_lost=self._exit_fenced,
            on_resumed_lost=self._resumed_lost,
        )
        self.session.watch = self.watch
        # Rescuer, auditor and pruner share one connection: four per worker process in all.
        maintenance = SharedConnection(self._connect).get
        self.rescuer = rescuer = Rescuer(
            self.q,
            maintenance,
            self.clock,
            lock_namespace=self.lock_namespace,
            channel=self.channel,
            interval=cfg.rescue_interval,
        )
        self._claim_lock = asyncio.Lock()
        auditor = Auditor(
            self.q,
            maintenance,
            self.clock,
            claim_lock=self._claim_lock,
            worker_id=lambda: self.session.worker_id,
            known=self._held_job_ids,
            channel=self.channel,
            interval=cfg.heartbeat_interval,
        )
        pruner = Pruner(
            self.q,
            maintenance,
            self.clock,
            retention=cfg.history_retention,
            dead_retention=cfg.dead_retention,
            interval=cfg.prune_interval,
        )
        self.scheduler = cron.Scheduler(
            self.app,
            self._connect,
            self.clock,
            probe=maintenance,  # followers hold no connection of their own
            interval=cfg.cron_interval,
            leader_retry=cfg.cron_leader_retry,
            retention=cfg.cron_history_retention,
        )
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        self.watch.start()
        background = [
            self._spawn(self.session.run, "session"),
            self._spawn(self.acker.run, "acker"),
            self._spawn(rescuer.loop, "rescuer"),
            self._spawn(pruner.loop, "pruner"),
            self._spawn(auditor.loop, "auditor"),
            *self._scheduler_tasks(),
        ]
        if self.monitoring is not None:
            for name, factory in self.monitoring.services(maintenance).items():
                background.append(self._spawn(factory, name))
        claimer = self._spawn(self._claim_loop, "claimer")
        try:
            await self._stop.wait()
        finally:
            self._stopping = True
            claimer.cancel()
            await asyncio.gather(claimer, return_exceptions=True)
            await self._drain()
            await self._flush_acks()
            with contextlib.suppress(psycopg.Error, PgJobsError):  # a claim cut short above
                await auditor.run_once(self.clock.db_now())
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for service in (self.claimer, self.acker, rescuer, pruner, auditor, self.scheduler):
                await service.close()
            self.watch.close()
            await self.session.close(unregister=not self._sync_left_running)
            if self.monitoring is not None:
                await self.monitoring.close()
            threads.shutdown()
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        log.info("worker stopped after %d job(s)", self.processed)

    async def check_schema(self) -> None:
        """Raise SchemaError/DatabaseError unless the server and schema are usable."""
        dsn = self.database.dsn

        def read_version() -> int:
            with db.connect(dsn) as conn, self.database.errors():
                db.check_server_version(
                    int(conn.execute(self.q["server_version"]).fetchone()[0])  # type: ignore[index]
                )
                return current_version(conn, self.app.schema)

        check_schema(await asyncio.to_thread(read_version), self.app.schema)

    def _observability(self) -> HookChain:
        """Applies the log format, starts the health server if configured (a port in use
        fails here, before anything else started), and returns the job hooks: the app's
        middleware, then job logging and (with a health port) metrics."""
        cfg = self.config
        if cfg.log_format is not None:
            logs.use_format(cfg.log_format)
        hooks: list[Middleware] = [*self.app.hooks.items, logs.job_logger()]
        if cfg.health_port is not None:
            from pgjobs.worker.monitoring import Monitoring

            monitoring = Monitoring(
                cfg,
                self.clock,
                self.database,
                busy_slots=lambda: len(self._running),
                state=self._state_check,
            )
            monitoring.start()
            self.monitoring = monitoring
            hooks.append(monitoring.metrics)
        return HookChain(hooks)

    def _state_check(self) -> Check:
        """Whether this worker takes jobs: registered and not stopping (read from the
        health server's thread)."""
        if self._stopping or self._stop.is_set():
            return Check(False, "shutting down")
        session = getattr(self, "session", None)
        worker_id = session.worker_id if session is not None else None
        if session is None or not session.ready.is_set() or worker_id is None:
            return Check(False, "not registered: the worker session is connecting")
        return Check(True, f"worker {worker_id} registered")

    def _scheduler_tasks(self) -> list[asyncio.Task[None]]:
        """The cron scheduler runs in every worker but a burst one (which neither
        registers schedules nor leads)."""
        if not self.config.cron or self.config.burst:
            return []
        return [self._spawn(self.scheduler.loop, "scheduler")]

    def _spawn(
        self, service: Callable[[], Coroutine[Any, Any, None]], name: str
    ) -> asyncio.Task[None]:
        return asyncio.create_task(self._supervise(service, name), name=name)

    async def _supervise(self, service: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run a background service; restart it (with backoff) whenever it crashes, so that
        nothing a service trips on can stop the worker. Only an outdated worker stops."""
        delay = RESTART_DELAY
        while True:
            started = self.clock.monotonic()
            try:
                await service()
                return
            except WorkerOutdated as exc:
                log.critical("%s", exc)
                self.exit_code = 1
                self.stop()
                return
            except Exception as exc:
                if self._stopping:
                    return
                if self.clock.monotonic() - started > RESTART_DELAY_MAX:
                    delay = RESTART_DELAY  # it had been running fine for a while
                log.error(
                    "worker %s task crashed; restarting it in %.1fs", name, delay, exc_info=exc
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (what SIGTERM does); callable from any thread."""
        loop = self._loop
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if loop is None or in_loop or loop.is_closed():
            self._stop.set()
        else:
            loop.call_soon_threadsafe(self._stop.set)

    async def _fence(self, worker_id: int) -> None:
        """The session of `worker_id` is gone for good and its jobs will be rescued once its
        rescue grace has passed: stop their handlers well before then, or exit."""
        self._lost_ids.add(worker_id)
        held = {task: job for task, job in self._running.items() if job.worker_id == worker_id}
        if held:
            await self._stop_handlers(held, f"worker {worker_id}")

    async def _stop_handlers(self, held: dict[asyncio.Task[None], Job], whose: str) -> None:
        """Stop the handlers of jobs that are (about to be) rescued, or exit."""
        in_threads = [job.id for job in held.values() if self._in_thread(job)]
        if in_threads:
            self._exit_fenced(f"sync handler(s) of job(s) {in_threads[:20]} cannot be stopped")
        for task in held:
            task.cancel()
        _, pending = await asyncio.wait(held, timeout=self.config.rescue_grace * FENCE_SHARE)
        if pending:
            self._exit_fenced(f"{len(pending)} async handler(s) did not stop when cancelled")
        log.warning("stopped %d job(s) of %s; they will be rescued", len(held), whose)

    async def _reattached(self, worker_id: int, running: set[int]) -> None:
        """`worker_id` took its session back; the database still runs `running` under it.
        Any other job of that id was rescued meanwhile: stop its handler (or exit)."""
        gone = {t: job for t, job in self._running.items() if job.worker_id == worker_id}
        gone = {t: job for t, job in gone.items() if job.id not in running}
        if not gone:
            return
        self._fenced_jobs.update((job.id, job.attempt) for job in gone.values())
        await self._stop_handlers(gone, f"job(s) {sorted(j.id for j in gone.values())[:20]}")

    def _resumed_lost(self, why: str) -> None:
        """The loop resumes after a block past the reattach window with its session gone:
        its jobs may be rescued already. Stop every handler before it takes another step."""
        if not self._running:
            return
        if any(self._in_thread(job) for job in self._running.values()):
            self._exit_fenced(why)
        if self.session.worker_id is not None:
            self._lost_ids.add(self.session.worker_id)
        for task in self._running:
            task.cancel()
        log.warning(
            "%s: cancelled %d handler(s); their jobs will be rescued", why, len(self._running)
        )

    def _exit_fenced(self, why: str) -> None:
        log.critical("lost the worker session for good and %s: exiting so that their jobs can "
                     "be rescued without running twice at once", why)  # fmt: skip
        _exit_now(EXIT_FENCED)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "received %s: finishing running jobs (grace %gs)",
                signal.Signals(sig).name,
                self.config.shutdown_grace,
            )
            self.stop()
            return
        log.warning(
            "received %s again: exiting now, running jobs will be rescued", signal.Signals(sig).name
        )
        _exit_now(1)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # Keepalives on every worker connection: a silent network drop must not hang a
        # claim or an ack for the kernel's default of minutes.
        return await db.connect_async(self.database.dsn, keepalives=True)

    # ------------------------------------------------------------------ claiming
    def _on_notify(self, queue: str) -> None:
        if self.claimer.notified(queue):
            self._wakeup.set()

    def _claim_budget(self) -> int:
        """How many jobs a claim may take now: free slots, and no more than keep the jobs
        this process holds (running, or ended with their outcome unwritten) within
        `unacked_limit`, so that a worker that cannot ack stops claiming."""
        cfg = self.config
        running = len(self._running)
        room = self.unacked_limit - running - len(self.acker.unacked)
        return min(cfg.concurrency - running, room, cfg.batch_size)

    async def _claim_loop(self) -> None:
        cfg = self.config
        delay = 0.1
        drained = False
        while True:
            if self._claim_budget() <= 0:
                if self.acker.starved:  # free our idle claim connection for the acker
                    await self.claimer.close()
                    self.acker.retry_now()
                self._slot_freed.clear()  # set again when a job ends or outcomes are written
                await self._slot_freed.wait()
                continue
            await self.session.ready.wait()
            worker_id = self.session.worker_id
            assert worker_id is not None
            self._wakeup.clear()
            try:
                async with self._claim_lock:  # the auditor must not see a claim half done
                    budget = self._claim_budget()  # jobs may have ended while we waited
                    jobs = await self.claimer.claim(worker_id, budget) if budget > 0 else []
                    if worker_id in self._lost_ids:  # fenced while this claim was under way
                        jobs = []  # not run here: the rescue hands them out again
                    for job in jobs:
                        self._running[asyncio.create_task(self._run_job(job))] = job
                delay = 0.1
            except (psycopg.Error, PgJobsError) as exc:
                shortage = db.connection_shortage(exc)
                if shortage:
                    log.error(
                        "short of Postgres connections (%s); retrying the claim in %.1fs",
                        shortage,
                        delay,
                    )
                else:
                    log.warning("claiming failed, retrying in %.1fs: %s", delay, exc)
                await self.claimer.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if jobs:
                drained = False
                continue
            if cfg.burst and not self._running:
                # Exit only after a claim that followed a full flush of outcomes and a rescue
                # pass came back empty: either may have made a job eligible again.
                if drained:
                    self.stop()
                    return
                await self.acker.flushed()
                with contextlib.suppress(psycopg.Error, PgJobsError):
                    await self.rescuer.run_once(self.clock.db_now())
                drained = True
                continue
            if not await self._woken(cfg.poll_interval):
                self.claimer.mark_stale()

    async def _woken(self, seconds: float) -> bool:
        """Wait for a wake-up (NOTIFY, a freed slot in burst mode) or `seconds`; True if
        woken. No wait_for: on Python 3.11 it can swallow a cancellation that lands in the
        same loop iteration as the wake-up, and stop() would never finish."""
        assert self._loop is not None
        timer = self._loop.call_later(seconds, self._poll_timeout)
        try:
            await self._wakeup.wait()
        finally:
            timer.cancel()
        if self._timed_out.is_set():
            self._timed_out.clear()
            return False
        return True

    def _poll_timeout(self) -> None:
        self._timed_out.set()
        self._wakeup.set()

    def _held_job_ids(self) -> set[int]:
        """Jobs this process runs or has yet to ack."""
        return {job.id for job in self._running.values()} | self.acker.unacked

    async def _run_job(self, job: Job) -> None:
        try:
            outcome = await self.executor.run(job)
        except asyncio.CancelledError:
            if job.worker_id in self._lost_ids or (job.id, job.attempt) in self._fenced_jobs:
                self._fenced_jobs.discard((job.id, job.attempt))
                return  # fenced: the rescue writes why it reruns
            outcome = Outcome(job, Kind.RELEASED)
        except Exception as exc:  # a failure outside the handler: never strand the job
            log.exception("job %s (%s): could not be run; retrying it later", job.id, job.task)
            message = f"pgjobs could not run the job: {describe_exception(exc)}"
            record = error_record(job, "internal_error", message, self.clock.now(), exc)
            outcome = Outcome(job, Kind.RETRY, INTERNAL_ERROR_BACKOFF.delay(job.attempt), record)
        finally:
            self._running.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._slot_freed.set()
            if self.config.burst:
                self._wakeup.set()
        self.processed += 1
        self.acker.submit(outcome)

    # ------------------------------------------------------------------ shutdown
    async def _drain(self) -> None:
        if not self._running:
            return
        log.info(
            "waiting up to %gs for %d running job(s)",
            self.config.shutdown_grace,
            len(self._running),
        )
        _, pending = await asyncio.wait(set(self._running), timeout=self.config.shutdown_grace)
        if not pending:
            return
        sync_jobs = {t for t in pending if self._in_thread(self._running.get(t))}
        for task in pending - sync_jobs:
            task.cancel()
        await asyncio.gather(*(pending - sync_jobs), return_exceptions=True)
        if sync_jobs:
            self._sync_left_running = True
            log.warning(
                "%d sync job(s) still running; they will be rescued after exit", len(sync_jobs)
            )

    def _in_thread(self, job: Job | None) -> bool:
        """Whether a sync handler runs `job` on a thread, which nothing can stop."""
        return job is not None and job.id in self.executor.in_threads

    async def _flush_acks(self) -> None:
        try:
            await asyncio.wait_for(
                self.acker.flushed(), timeout=max(5.0, self.config.shutdown_grace)
            )
        except TimeoutError:
            log.error("could not write all job outcomes before exit; those jobs will be rescued")
