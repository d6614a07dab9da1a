from typing import Any

import psycopg

import pgjobs


def test_enqueue_and_burst_worker_runs_job(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    seen: list[int] = []

    @app.task(name="add")
    def add(a: int, b: int) -> None:
        seen.append(a + b)

    job_id = add.enqueue(1, b=2)
    app.run_worker(burst=True, install_signal_handlers=False)
    assert seen == [3]
    row = db.execute("SELECT state FROM pgjobs.job_history WHERE id = %s", (job_id,)).fetchone()
    assert row == ("succeeded",)
