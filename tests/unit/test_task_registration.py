"""App.task registration, Task defaults and the checks enqueue makes before any I/O.

The app points at a DSN that cannot work, so an accidental connection attempt would fail
with a DatabaseError (after a connect timeout), never with the TypeError/ValueError expected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pgjobs
from pgjobs import App, Backoff, ConfigError, Task, TaskCall
from pgjobs.task import DEFAULT_MAX_ATTEMPTS

BAD_DSN = "host=/nonexistent dbname=x"


def send_email(to: str, subject: str = "hello") -> str:
    """Send one email."""
    return f"{to}:{subject}"


def other_send_email(to: str) -> None:
    """A different function registered under a taken name."""


@pytest.fixture
def app() -> Iterator[App]:
    application = App(dsn=BAD_DSN)
    yield application
    # Nothing may have opened a pool: every test here fails or succeeds before any I/O.
    assert application.database._pool is None
    assert not application.database._async_pools
    application.close()


# --- registration ---------------------------------------------------------------------------


def test_bare_decorator_default_name(app: App) -> None:
    task = app.task(send_email)
    assert isinstance(task, Task)
    assert task.name == f"{__name__}.send_email"
    assert app.tasks == {task.name: task}


def test_default_name_uses_qualname(app: App) -> None:
    class Jobs:
        @staticmethod
        def build() -> None: ...

    task = app.task(Jobs.build)
    assert task.name == f"{__name__}.test_default_name_uses_qualname.<locals>.Jobs.build"


def test_bare_decorator_defaults(app: App) -> None:
    @app.task
    def ping() -> None: ...

    assert ping.queue == "default"
    assert ping.priority == 0
    assert ping.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert ping.retry == Backoff()
    assert ping.timeout is None
    assert ping.is_async is False


def test_decorator_with_arguments(app: App) -> None:
    backoff = Backoff(initial=2, factor=3, max=60, jitter=0)

    @app.task(
        name="reports.build",
        queue="reports",
        priority=7,
        max_attempts=2,
        retry=backoff,
        timeout=timedelta(minutes=5),
    )
    async def build_report(report_id: int) -> dict[str, int]:
        return {"id": report_id}

    assert app.tasks["reports.build"] is build_report
    assert build_report.name == "reports.build"
    assert build_report.queue == "reports"
    assert build_report.priority == 7
    assert build_report.max_attempts == 2
    assert build_report.retry is backoff
    assert build_report.timeout == 300.0
    assert build_report.is_async is True


def test_decorator_with_empty_parentheses(app: App) -> None:
    @app.task()
    def ping() -> None: ...

    assert isinstance(ping, Task)
    assert ping.name.endswith(".ping")


def test_numeric_timeout_is_seconds(app: App) -> None:
    task = app.task(timeout=1.5)(send_email)
    assert task.timeout == 1.5


def test_task_keeps_function_metadata(app: App) -> None:
    task = app.task(send_email)
    assert task.__name__ == "send_email"
    assert task.__doc__ == "Send one email."
    assert task.__wrapped__ is send_email
    assert task.fn is send_email
    assert "send_email" in repr(task)
    assert "queue=default" in repr(task)


def test_calling_a_task_runs_the_function(app: App) -> None:
    task = app.task(send_email)
    assert task("a@b.c", subject="hi") == "a@b.c:hi"
    assert task("a@b.c") == "a@b.c:hello"


def test_calling_an_async_task_returns_a_coroutine(app: App) -> None:
    @app.task
    async def double(x: int) -> int:
        return x * 2

    assert asyncio.run(double(21)) == 42


def test_duplicate_name_raises_config_error(app: App) -> None:
    app.task(name="mail.send")(send_email)
    with pytest.raises(ConfigError, match=r"task name 'mail\.send' is registered twice"):
        app.task(name="mail.send")(other_send_email)
    assert app.tasks["mail.send"].fn is send_email


def test_duplicate_default_name_raises_config_error(app: App) -> None:
    app.task(name=f"{__name__}.send_email")(other_send_email)
    with pytest.raises(ConfigError, match="registered twice"):
        app.task(send_email)


def test_same_function_twice_is_not_a_duplicate(app: App) -> None:
    app.task(send_email)
    again = app.task(send_email)
    assert app.tasks[again.name] is again


def test_apps_have_separate_registries(app: App) -> None:
    other = App(dsn=BAD_DSN)
    app.task(name="x")(send_email)
    other.task(name="x")(other_send_email)
    assert app.tasks["x"].fn is send_email
    assert other.tasks["x"].fn is other_send_email


def test_decorating_a_non_callable(app: App) -> None:
    with pytest.raises(TypeError, match="decorates a function"):
        app.task(name="x")(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, timedelta(0), timedelta(seconds=-5)])
def test_invalid_timeout(app: App, timeout: float | timedelta) -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        app.task(timeout=timeout)(send_email)
    assert app.tasks == {}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts must be an int >= 1"),
        ({"priority": "high"}, TypeError, "priority must be an int"),
        ({"queue": ""}, ValueError, "queue name must be a non-empty string"),
        ({"name": "x" * 201}, ValueError, "task name is longer than"),
        ({"retry": 5}, TypeError, "retry must be a pgjobs.Backoff"),
    ],
)
def test_invalid_task_options(
    app: App, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        app.task(**kwargs)(send_email)
    assert app.tasks == {}


def test_invalid_schema_name() -> None:
    with pytest.raises(ConfigError, match="invalid schema name"):
        App(dsn=BAD_DSN, schema="a-b")


def test_app_repr(app: App) -> None:
    app.task(send_email)
    assert repr(app) == "<pgjobs.App schema=pgjobs tasks=1>"


# --- enqueue checks before I/O --------------------------------------------------------------


def test_enqueue_too_many_arguments(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match=r"task 'mail\.send': too many positional arguments"):
        task.enqueue("a@b.c", "subject", "extra")  # type: ignore[call-arg]


def test_enqueue_missing_argument(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match=r"task 'mail\.send': missing a required argument: 'to'"):
        task.enqueue(subject="hi")  # type: ignore[call-arg]


def test_enqueue_unexpected_keyword(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match=r"task 'mail\.send': .*unexpected keyword.*'cc'"):
        task.enqueue("a@b.c", cc="x")  # type: ignore[call-arg]


def test_enqueue_non_json_argument(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match=r"task 'mail\.send': argument 'subject'"):
        task.enqueue("a@b.c", subject=object())  # type: ignore[arg-type]


def test_enqueue_async_checks_arguments(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match=r"task 'mail\.send': too many positional arguments"):
        asyncio.run(task.enqueue_async("a", "b", "c"))  # type: ignore[call-arg]


def test_options_enqueue_checks_arguments(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    call = task.options(queue="bulk", delay=timedelta(seconds=5))
    with pytest.raises(TypeError, match=r"task 'mail\.send': missing a required argument"):
        call.enqueue()  # type: ignore[call-arg]


def test_enqueue_many_checks_every_item(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match=r"task 'mail\.send': .*unexpected keyword.*'bcc'"):
        task.enqueue_many([{"to": "a"}, {"to": "b", "bcc": "c"}])
    with pytest.raises(TypeError, match=r"task 'mail\.send': missing a required argument"):
        task.enqueue_many([{"subject": "no recipient"}])


def test_enqueue_many_item_not_a_dict(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match="enqueue_many takes a list of keyword-argument dicts"):
        task.enqueue_many([("a@b.c",)])  # type: ignore[list-item]


def test_enqueue_many_rejects_dedup_key(app: App) -> None:
    task = app.task(name="mail.send")(send_email)
    with pytest.raises(ValueError, match="does not take a dedup_key"):
        task.options(dedup_key="k").enqueue_many([{"to": "a"}])


def test_enqueue_many_of_nothing_needs_no_database(app: App) -> None:
    task = app.task(send_email)
    assert task.enqueue_many([]) == []
    assert asyncio.run(task.enqueue_many_async([])) == []


def test_app_enqueue_by_name_checks_registered_signature(app: App) -> None:
    app.task(name="mail.send")(send_email)
    with pytest.raises(TypeError, match=r"task 'mail\.send': .*unexpected keyword"):
        app.enqueue("mail.send", kwargs={"to": "a@b.c", "nope": 1})


@pytest.mark.parametrize("args", ["abc", b"abc", 5, {"a": 1}])
def test_app_enqueue_args_must_be_a_sequence(app: App, args: Any) -> None:
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        app.enqueue("elsewhere.task", args)


def test_app_enqueue_kwargs_must_be_a_mapping(app: App) -> None:
    with pytest.raises(TypeError, match="kwargs must be a dict"):
        app.enqueue("elsewhere.task", kwargs=[("a", 1)])  # type: ignore[arg-type]


def test_app_enqueue_rejects_empty_name_and_bad_options(app: App) -> None:
    with pytest.raises(ValueError, match="task name must be a non-empty string"):
        app.enqueue("")
    with pytest.raises(ValueError, match="either delay or run_at"):
        app.enqueue("x", delay=timedelta(1), run_at=datetime.now(UTC))
    with pytest.raises(TypeError, match="not JSON serializable"):
        asyncio.run(app.enqueue_async("x", [object()]))


# --- options() ------------------------------------------------------------------------------


def test_options_returns_bound_call(app: App) -> None:
    task = app.task(send_email)
    run_at = datetime(2026, 5, 1, tzinfo=UTC)
    call = task.options(
        run_at=run_at, priority=3, queue="bulk", dedup_key="welcome:42", max_attempts=2
    )
    assert isinstance(call, TaskCall)
    assert call.task is task
    assert call.conn is None
    assert (call.opts.run_at, call.opts.priority, call.opts.queue) == (run_at, 3, "bulk")
    assert (call.opts.dedup_key, call.opts.max_attempts) == ("welcome:42", 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"delay": timedelta(1), "run_at": datetime(2026, 1, 1, tzinfo=UTC)},
            ValueError,
            "either delay or run_at",
        ),
        ({"run_at": datetime(2026, 1, 1)}, ValueError, "timezone-aware"),
        ({"delay": 5}, TypeError, "delay must be a timedelta"),
        ({"priority": 1.5}, TypeError, "priority must be an int"),
        ({"max_attempts": 0}, ValueError, "max_attempts must be an int >= 1"),
        ({"dedup_key": ""}, ValueError, "dedup_key must be a non-empty string"),
        ({"queue": "  "}, ValueError, "queue name must be a non-empty string"),
    ],
)
def test_options_validation(
    app: App, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    task = app.task(send_email)
    with pytest.raises(error, match=message):
        task.options(**kwargs)


def test_public_names_exported() -> None:
    for name in pgjobs.__all__:
        assert hasattr(pgjobs, name), name
