"""Tasks: a handler plus its defaults, and the enqueue methods built on them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from pgjobs import producer
from pgjobs.backoff import Backoff
from pgjobs.job import (
    EnqueueOptions,
    check_name,
    encode_many,
    enqueue_params,
    many_params,
)

if TYPE_CHECKING:
    from pgjobs.app import App
    from pgjobs.producer import AnyConn

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_ATTEMPTS = 5


class Task(Generic[P, R]):
    """A registered handler. Call it to run it inline; `enqueue` it to run it on a worker."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, R] | Callable[P, Awaitable[R]],
        *,
        name: str,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: Backoff | None = None,
        timeout: float | timedelta | None = None,
    ):
        self.app = app
        self.fn = fn
        self.name = check_name("task", name)
        self.queue = check_name("queue", queue)
        EnqueueOptions(priority=priority, max_attempts=max_attempts)  # validates both
        self.priority = priority
        self.max_attempts = max_attempts
        self.retry = retry or Backoff()
        if not isinstance(self.retry, Backoff):
            raise TypeError(f"retry must be a pgjobs.Backoff, got {retry!r}")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None and seconds <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.timeout = seconds
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none
            self.signature = None
        self._fitting_shapes: set[tuple[int, frozenset[str]]] = set()
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the handler inline (no queue); handy in tests and scripts."""
        return self.fn(*args, **kwargs)

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError, naming the task, if the arguments do not fit the handler."""
        for key in kwargs:
            if not isinstance(key, str):
                raise TypeError(f"task {self.name!r}: keyword argument names must be strings")
        if self.signature is None:
            return
        # Binding depends only on how many positional arguments and which keywords.
        shape = (len(args), frozenset(kwargs))
        if shape in self._fitting_shapes:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r}: {exc}") from None
        if len(self._fitting_shapes) < 1000:
            self._fitting_shapes.add(shape)

    def options(
        self,
        *,
        conn: AnyConn | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        dedup_key: str | None = None,
        max_attempts: int | None = None,
    ) -> TaskCall[P, R]:
        """Per-call overrides; `conn` joins the caller's transaction."""
        opts = EnqueueOptions(queue, priority, delay, run_at, dedup_key, max_attempts)
        return TaskCall(self, opts, conn)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Enqueue a run in its own transaction; returns the job id."""
        return TaskCall(self, EnqueueOptions(), None).enqueue(*args, **kwargs)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> int:
        return await TaskCall(self, EnqueueOptions(), None).enqueue_async(*args, **kwargs)

    def enqueue_many(
        self, items: Iterable[Mapping[str, Any]], *, conn: AnyConn | None = None
    ) -> list[int]:
        """Enqueue one job per kwargs mapping, all or none; returns the ids in order."""
        return TaskCall(self, EnqueueOptions(), conn).enqueue_many(items)

    async def enqueue_many_async(
        self, items: Iterable[Mapping[str, Any]], *, conn: AnyConn | None = None
    ) -> list[int]:
        return await TaskCall(self, EnqueueOptions(), conn).enqueue_many_async(items)


class TaskCall(Generic[P, R]):
    """A task with per-call options bound; made by `Task.options()`."""

    def __init__(self, task: Task[P, R], options: EnqueueOptions, conn: AnyConn | None):
        self.task = task
        self.opts = options
        self.conn = conn

    def _params(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        task = self.task
        task.check_arguments(args, kwargs)
        return enqueue_params(
            task.name,
            args,
            kwargs,
            queue=task.queue,
            priority=task.priority,
            max_attempts=task.max_attempts,
            options=self.opts,
        )

    def _many(self, items: list[Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
        """The `enqueue_many` parameters and each item's encoded kwargs, checked before I/O."""
        task = self.task
        params = many_params(
            task.name,
            queue=task.queue,
            priority=task.priority,
            max_attempts=task.max_attempts,
            options=self.opts,
        )
        encoded = encode_many(task.name, items)
        for item in items:
            task.check_arguments((), item)
        return params, encoded

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        params = self._params(args, kwargs)
        job_id = producer.enqueue(self.task.app.database, params, self.conn)
        self.task.app.hooks.enqueued_params(job_id, params, self.conn is not None)
        return job_id

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> int:
        params = self._params(args, kwargs)
        job_id = await producer.enqueue_async(self.task.app.database, params, self.conn)
        self.task.app.hooks.enqueued_params(job_id, params, self.conn is not None)
        return job_id

    def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[int]:
        params, encoded = self._many(list(items))
        ids = producer.enqueue_many(self.task.app.database, params, encoded, self.conn)
        self._enqueued(ids)
        return ids

    async def enqueue_many_async(self, items: Iterable[Mapping[str, Any]]) -> list[int]:
        params, encoded = self._many(list(items))
        ids = await producer.enqueue_many_async(self.task.app.database, params, encoded, self.conn)
        self._enqueued(ids)
        return ids

    def _enqueued(self, ids: list[int]) -> None:
        task = self.task
        queue = self.opts.queue or task.queue
        task.app.hooks.enqueued(ids, task.name, queue, None, self.conn is not None)
