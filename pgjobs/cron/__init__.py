"""Cron and interval schedules: each tick is an ordinary job, enqueued by one elected leader.

Declare with `@app.cron(...)` / `@app.every(...)`; operate with `CronAdmin(app)` or
`pgjobs cron ...`. The expression math is in `pgjobs.cron.expression`, pure functions of
(expression, time, timezone).
"""

from pgjobs.cron.admin import CronAdmin, Leader, Run, ScheduleInfo
from pgjobs.cron.describe import describe
from pgjobs.cron.errors import ScheduleNotFound, TriggerRefused
from pgjobs.cron.expression import latest_tick, next_tick
from pgjobs.cron.schedule import Missed, Schedule, Trigger

__all__ = [
    "CronAdmin",
    "Leader",
    "Missed",
    "Run",
    "Schedule",
    "ScheduleInfo",
    "ScheduleNotFound",
    "Trigger",
    "TriggerRefused",
    "describe",
    "latest_tick",
    "next_tick",
]
