"""`@app.cron` / `@app.every`: what they register, and the ConfigErrors raised at definition.

The app points at a DSN that cannot work: defining schedules never touches the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from pgjobs import App, Backoff, ConfigError, Task
from pgjobs.cron import Missed, Schedule, describe
from pgjobs.task import DEFAULT_MAX_ATTEMPTS

BAD_DSN = "host=/nonexistent dbname=x"


@pytest.fixture
def app() -> Iterator[App]:
    application = App(dsn=BAD_DSN)
    yield application
    assert application.database._pool is None
    application.close()


def digest(edition: str = "am") -> str:
    return edition


def needs_argument(user_id: int) -> None: ...


def other_digest() -> None: ...


# ----------------------------------------------------------------------------- registration
def test_cron_registers_a_task_and_a_schedule_named_after_it(app: App) -> None:
    task = app.cron("0 9 * * MON", timezone="Europe/Paris")(digest)
    assert isinstance(task, Task)
    assert task.name == f"{__name__}.digest"
    assert app.tasks == {task.name: task}
    schedule = app.schedules[task.name]
    assert schedule == Schedule(
        name=task.name,
        task=task.name,
        expression="0 9 * * MON",
        timezone="Europe/Paris",
        queue="default",
        priority=0,
        max_attempts=DEFAULT_MAX_ATTEMPTS,
        kwargs={},
        kwargs_json="{}",
        missed=Missed.LATEST,
    )
    assert schedule.description == "every Monday at 09:00 (Europe/Paris)"
    assert task() == "am"  # still callable inline


def test_cron_with_name_queue_kwargs_missed_and_task_options(app: App) -> None:
    retry = Backoff(initial=5)
    task = app.cron(
        "*/5 * * * *",
        name="weekly-digest",
        queue="reports",
        kwargs={"edition": "pm"},
        missed="all",
        priority=7,
        max_attempts=2,
        retry=retry,
        timeout=30,
    )(digest)
    schedule = app.schedules["weekly-digest"]
    assert (schedule.task, schedule.queue, schedule.kwargs, schedule.kwargs_json) == (
        task.name,
        "reports",
        {"edition": "pm"},
        '{"edition":"pm"}',
    )
    assert (schedule.missed, schedule.priority, schedule.max_attempts) == (Missed.ALL, 7, 2)
    assert (task.priority, task.max_attempts, task.retry, task.timeout) == (7, 2, retry, 30)
    assert task.queue == "reports"  # a task made for the schedule lives on its queue


def test_every_stores_an_interval_expression(app: App) -> None:
    app.every(timedelta(seconds=30), name="sweep")(digest)
    app.every(timedelta(hours=1, minutes=30), name="slow")(digest)
    app.every(45, name="plain-seconds")(digest)
    assert app.schedules["sweep"].expression == "@every 30s"
    assert app.schedules["sweep"].timezone == "UTC"
    assert app.schedules["slow"].expression == "@every 1h30m"
    assert app.schedules["plain-seconds"].description == "every 45 seconds"


def test_cron_accepts_seconds_and_aliases_and_normalises(app: App) -> None:
    app.cron("  @Hourly ", name="a")(digest)
    app.cron("0 9 * * * 30", name="b")(digest)
    assert app.schedules["a"].expression == "@hourly"
    assert app.schedules["b"].expression == "0 9 * * * 30"


def test_stacked_schedules_share_one_task(app: App) -> None:
    @app.cron("0 8 * * *", name="digest-am", kwargs={"edition": "am"})
    @app.cron("0 18 * * *", name="digest-pm", kwargs={"edition": "pm"})
    def twice(edition: str) -> None: ...

    assert list(app.tasks) == [twice.name]
    assert {s.task for s in app.schedules.values()} == {twice.name}
    assert sorted(app.schedules) == ["digest-am", "digest-pm"]


def test_schedule_on_a_task_declared_with_app_task(app: App) -> None:
    task = app.task(name="reports.build", queue="reports", priority=3)(digest)
    assert app.cron("@daily")(task) is task
    schedule = app.schedules["reports.build"]
    assert (schedule.queue, schedule.priority) == ("reports", 3)
    app.cron("@hourly", name="urgent", queue="urgent")(task)  # ticks elsewhere, task unchanged
    assert (app.schedules["urgent"].queue, task.queue) == ("urgent", "reports")


def test_identical_redefinition_is_allowed(app: App) -> None:
    app.cron("@daily", name="d")(digest)
    app.cron("@daily", name="d")(digest)
    assert list(app.schedules) == ["d"]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 25 * * *", "invalid schedule '0 25 * * *': hour field '25': out of range"),
        ("* * * *", "invalid schedule '* * * *': expected 5 fields"),
        ("@reboot", "invalid schedule '@reboot'"),
        ("0 0 30 2 *", "invalid schedule '0 0 30 2 *': it never matches a date"),
    ],
)
def test_invalid_cron_fails_when_the_decorator_is_made(
    app: App, expression: str, message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("*", r"\*").replace("(", r"\(")):
        app.cron(expression)
    assert app.tasks == {}
    assert app.schedules == {}


def test_invalid_timezone(app: App) -> None:
    with pytest.raises(ConfigError, match="unknown timezone 'Europe/Pariss'"):
        app.cron("@daily", timezone="Europe/Pariss")


@pytest.mark.parametrize("interval", [timedelta(0), timedelta(milliseconds=500), -1])
def test_invalid_interval(app: App, interval: timedelta | int) -> None:
    with pytest.raises(ConfigError, match="interval"):
        app.every(interval)


def test_invalid_missed_policy_leaves_nothing_registered(app: App) -> None:
    with pytest.raises(ConfigError, match="missed must be one of 'latest', 'skip', 'all'"):
        app.cron("@daily", missed="sometimes")(digest)
    assert app.tasks == {}
    assert app.schedules == {}


def test_kwargs_that_do_not_fit_the_handler(app: App) -> None:
    with pytest.raises(ConfigError, match=r"schedule 'x': task .*missing a required argument"):
        app.cron("@daily", name="x")(needs_argument)
    with pytest.raises(ConfigError, match="unexpected keyword argument"):
        app.cron("@daily", name="y", kwargs={"nope": 1})(digest)
    assert app.tasks == {}
    assert app.schedules == {}


def test_kwargs_must_be_json(app: App) -> None:
    with pytest.raises(ConfigError, match="not JSON serializable"):
        app.cron("@daily", kwargs={"edition": object()})(digest)


def test_a_taken_schedule_name(app: App) -> None:
    app.cron("@daily", name="nightly")(digest)
    with pytest.raises(ConfigError, match="schedule name 'nightly' is registered twice"):
        app.cron("@hourly", name="nightly")(other_digest)
    assert list(app.schedules) == ["nightly"]
    assert list(app.tasks) == [f"{__name__}.digest"]  # the failed one did not stay


def test_invalid_names(app: App) -> None:
    with pytest.raises(ConfigError, match="schedule name must be a non-empty string"):
        app.cron("@daily", name="")(digest)
    with pytest.raises(ConfigError, match="queue name"):
        app.cron("@daily", queue=" ")(digest)


def test_task_options_for_an_existing_task_are_refused(app: App) -> None:
    task = app.task(digest)
    with pytest.raises(ConfigError, match=r"exists already: give its options to @app\.task"):
        app.cron("@daily", priority=5)(task)


def test_a_task_of_another_app_is_refused(app: App) -> None:
    other = App(dsn=BAD_DSN)
    task = other.task(digest)
    with pytest.raises(ConfigError, match="belongs to another App"):
        app.cron("@daily")(task)


# ----------------------------------------------------------------------------- words
@pytest.mark.parametrize(
    ("expression", "timezone", "words"),
    [
        ("0 9 * * MON", "Europe/Paris", "every Monday at 09:00 (Europe/Paris)"),
        ("0 9 * * mon-fri", "UTC", "Monday to Friday at 09:00 (UTC)"),
        ("0 9,17 * * 1,4", "UTC", "every Monday and Thursday at 09:00 and 17:00 (UTC)"),
        ("0 9 * * 0-6", "UTC", "every day at 09:00 (UTC)"),
        ("30 2 * * *", "Europe/Paris", "every day at 02:30 (Europe/Paris)"),
        ("* * * * *", "UTC", "every minute"),
        ("*/5 * * * *", "Europe/Paris", "every 5 minutes"),
        ("5 * * * *", "UTC", "every hour at :05"),
        ("0 */2 * * *", "UTC", "every 2 hours at :00"),
        ("0 0 1 * *", "UTC", "on day 1 of every month at 00:00 (UTC)"),
        ("0 0 L * *", "UTC", "on the last day of every month at 00:00 (UTC)"),
        ("0 0 25 12 *", "UTC", "every December 25 at 00:00 (UTC)"),
        ("@hourly", "UTC", "every hour at :00"),
        ("@daily", "Asia/Tokyo", "every day at 00:00 (Asia/Tokyo)"),
        ("@weekly", "UTC", "every Sunday at 00:00 (UTC)"),
        ("@yearly", "UTC", "every January 1 at 00:00 (UTC)"),
        ("@every 30s", "UTC", "every 30 seconds"),
        ("@every 1h30m", "UTC", "every 1 hour 30 minutes"),
        ("@every 1d", "UTC", "every 1 day"),
        ("* * * * * *", "UTC", "every second"),
        ("* * * * * */10", "UTC", "every 10 seconds"),
        # Shapes without words are shown as they are, never described wrongly:
        ("0 9 * * 1#2", "UTC", "0 9 * * 1#2"),
        ("0 9 1-7 * MON", "Europe/Paris", "0 9 1-7 * MON (Europe/Paris)"),
        ("* * * * * 15", "UTC", "* * * * * 15"),
        ("0 9 * JAN *", "UTC", "0 9 * JAN *"),
        ("not a cron", "UTC", "not a cron"),
    ],
)
def test_expressions_in_words(expression: str, timezone: str, words: str) -> None:
    assert describe(expression, timezone) == words
