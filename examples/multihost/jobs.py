"""A task for a fleet of workers: every host runs `pgjobs worker examples.multihost.jobs:app`
against the same database, and each job runs on whichever worker claims it first.

Delivery is at-least-once (a job runs again if its worker dies mid-run), so the handler is
idempotent: a second run of the same image changes nothing.
"""

from __future__ import annotations

import os
import socket
import time

import psycopg

import pgjobs

app = pgjobs.App()

TABLE = """
CREATE TABLE IF NOT EXISTS thumbnails (
    image_id    bigint PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    job_id      bigint NOT NULL,
    made_at     timestamptz NOT NULL DEFAULT now()
)
"""


def create_table(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(TABLE)


@app.task(name="media.make_thumbnail", queue="media")
def make_thumbnail(image_id: int) -> None:
    """Pretend to resize an image, then record who did it (once per image)."""
    job = pgjobs.current_job()
    time.sleep(0.05)  # the resizing
    with psycopg.connect(os.environ.get("PGJOBS_DSN", "")) as conn:
        conn.execute(
            "INSERT INTO thumbnails (image_id, host, pid, job_id) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (image_id) DO NOTHING",
            (image_id, socket.gethostname(), os.getpid(), job.id),
        )
