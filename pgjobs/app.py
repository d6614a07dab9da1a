"""The App: task registry, database access and the entry points around them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from pgjobs import db, producer
from pgjobs.backoff import Backoff
from pgjobs.clock import Clock, SystemClock
from pgjobs.cron.decorate import schedule_decorator
from pgjobs.cron.expression import check_timezone, every_text, parse
from pgjobs.cron.schedule import Missed, Schedule
from pgjobs.errors import ConfigError
from pgjobs.job import EnqueueOptions, check_name, enqueue_params
from pgjobs.middleware import HookChain, Middleware
from pgjobs.migrate import apply_migrations
from pgjobs.queries import check_schema_name
from pgjobs.task import DEFAULT_MAX_ATTEMPTS, Task

if TYPE_CHECKING:
    from pgjobs.admin import Admin
    from pgjobs.producer import AnyConn

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """A pgjobs application: where tasks are registered and jobs go.

    `dsn` defaults to $PGJOBS_DSN, else libpq's environment (PGHOST, PGUSER...).
    """

    def __init__(
        self, dsn: str | None = None, schema: str = "pgjobs", *, clock: Clock | None = None
    ):
        self.schema = check_schema_name(schema)
        self.database = db.Database(dsn, self.schema)
        self.clock: Clock = clock or SystemClock()
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}  # cron/interval schedule defaults by name
        self.hooks = HookChain()

    def __repr__(self) -> str:
        return f"<pgjobs.App schema={self.schema} tasks={len(self.tasks)}>"

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: Backoff | None = None,
        timeout: float | timedelta | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: Backoff | None = None,
        timeout: float | timedelta | None = None,
    ) -> Any:
        """Register a sync or async handler; the name defaults to "module.function"."""

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            if not callable(func):
                raise TypeError(f"@app.task decorates a function, got {func!r}")
            task_name = f"{func.__module__}.{func.__qualname__}" if name is None else name
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise ConfigError(f"task name {task_name!r} is registered twice")
            task: Task[Any, Any] = Task(
                self,
                func,
                name=task_name,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                retry=retry,
                timeout=timeout,
            )
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def cron(
        self,
        expression: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        queue: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
        missed: Missed | str = Missed.LATEST,
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: Backoff | None = None,
        timeout: float | timedelta | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Run the handler on a cron schedule (croniter syntax, optional 6th seconds field,
        @hourly-style aliases) in `timezone`; each tick is an ordinary job.

        Registers the handler as a task (named as by `task`, on `queue`) unless it is one
        already, and a schedule called `name` (default: the task name) whose ticks go to
        `queue` with `kwargs`. Operators may change its timing and enabled state at runtime.
        `missed` ("latest", "skip" or "all") says what happens to ticks missed while no
        worker ran. Invalid input raises ConfigError here, at definition.
        """
        parse(expression)
        check_timezone(timezone)
        return schedule_decorator(
            self,
            expression,
            name=name,
            timezone=timezone,
            queue=queue,
            kwargs=kwargs,
            missed=missed,
            priority=priority,
            max_attempts=max_attempts,
            retry=retry,
            timeout=timeout,
        )

    def every(
        self,
        interval: timedelta | float,
        *,
        name: str | None = None,
        queue: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
        missed: Missed | str = Missed.LATEST,
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: Backoff | None = None,
        timeout: float | timedelta | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Run the handler every `interval` (whole seconds, at least 1). Ticks fall on
        multiples of the interval since the Unix epoch (`timedelta(hours=1)`: on the hour,
        UTC); the schedule's expression reads "@every 1h". Otherwise as `cron`."""
        return schedule_decorator(
            self,
            every_text(interval),
            name=name,
            timezone="UTC",
            queue=queue,
            kwargs=kwargs,
            missed=missed,
            priority=priority,
            max_attempts=max_attempts,
            retry=retry,
            timeout=timeout,
        )

    def middleware(self, hooks: Middleware) -> Middleware:
        """Register hooks that run around every job and enqueue (see `pgjobs.Middleware`)."""
        self.hooks = HookChain([*self.hooks.items, hooks])
        return hooks

    @cached_property
    def admin(self) -> Admin:
        """Operations on jobs, queues and workers: what the `pgjobs` CLI runs."""
        from pgjobs.admin import Admin

        return Admin(self)

    def _params(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        options: EnqueueOptions,
    ) -> dict[str, Any]:
        check_name("task", name)
        kwargs = kwargs or {}
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise TypeError(f"task {name!r}: args must be a list or tuple, got {args!r}")
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"task {name!r}: kwargs must be a dict, got {kwargs!r}")
        task = self.tasks.get(name)
        if task is not None:
            task.check_arguments(args, kwargs)
        return enqueue_params(
            name,
            args,
            kwargs,
            queue=task.queue if task else "default",
            priority=task.priority if task else 0,
            max_attempts=task.max_attempts if task else None,
            options=options,
        )

    def enqueue(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        conn: AnyConn | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        dedup_key: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Enqueue a task by name; the handler need not be importable here."""
        opts = EnqueueOptions(queue, priority, delay, run_at, dedup_key, max_attempts)
        params = self._params(name, args, kwargs, opts)
        job_id = producer.enqueue(self.database, params, conn)
        self.hooks.enqueued_params(job_id, params, conn is not None)
        return job_id

    async def enqueue_async(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        conn: AnyConn | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        dedup_key: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        opts = EnqueueOptions(queue, priority, delay, run_at, dedup_key, max_attempts)
        params = self._params(name, args, kwargs, opts)
        job_id = await producer.enqueue_async(self.database, params, conn)
        self.hooks.enqueued_params(job_id, params, conn is not None)
        return job_id

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied (empty when up to date)."""
        database = self.database
        with database.errors(), db.connect(database.dsn, autocommit=True) as conn:
            return apply_migrations(conn, self.schema)

    def run_worker(
        self,
        queues: Iterable[str] | None = None,
        concurrency: int = 10,
        burst: bool = False,
        *,
        shutdown_grace: float = 30.0,
        install_signal_handlers: bool = True,
        health_port: int | None = None,
    ) -> None:
        """Run a worker in this process until SIGTERM/SIGINT (or, with burst, until idle).

        With `health_port`, serve /healthz, /readyz and /metrics on it (0: any free port).
        """
        from pgjobs.worker import Worker, WorkerConfig

        config = WorkerConfig(
            queues=tuple(queues) if queues is not None else None,
            concurrency=concurrency,
            burst=burst,
            shutdown_grace=shutdown_grace,
            health_port=health_port,
        )
        Worker(self, config).run(install_signal_handlers=install_signal_handlers)

    def close(self) -> None:
        """Close the app's connection pools."""
        self.database.close()

    async def aclose(self) -> None:
        """Close the app's pools from async code (closes the running loop's pool cleanly)."""
        await self.database.aclose()
