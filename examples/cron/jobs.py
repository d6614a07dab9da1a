"""Cron jobs: code declares schedules and their defaults; the database holds them, so an
operator can disable or re-time one at runtime without a deploy (see README, Cron schedules).

    pgjobs migrate
    pgjobs worker examples.cron.jobs:app    # any number of workers: one leader enqueues ticks
"""

from __future__ import annotations

from datetime import timedelta

import pgjobs

app = pgjobs.App()


@app.cron("0 9 * * MON", name="weekly-digest", timezone="Europe/Paris")
def weekly_digest() -> None:
    """Mondays at 09:00 Paris time, summer or winter."""


@app.cron("* * * * * */15", name="ping")  # a sixth field (croniter syntax): seconds
def ping() -> None:
    """Every 15 seconds."""


@app.every(timedelta(seconds=30), name="sweep")
def sweep() -> None:
    """Every 30 seconds, counted from the previous tick."""
