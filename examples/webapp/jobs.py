"""The shop's background jobs. The web app and `pgjobs worker examples.webapp.jobs:app`
both import this module; both read the database from $PGJOBS_DSN."""

from __future__ import annotations

import os

import psycopg

import pgjobs

app = pgjobs.App()


def connect() -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the shop's database (the same one pgjobs uses)."""
    return psycopg.connect(os.environ.get("PGJOBS_DSN", ""))


@app.task(name="shop.send_receipt", queue="email", max_attempts=5)
def send_receipt(order_id: int) -> None:
    """Email the receipt of an order. Idempotent: a second run sends nothing."""
    with connect() as conn:
        row = conn.execute("SELECT email FROM orders WHERE id = %s", (order_id,)).fetchone()
        if row is None:  # cannot happen: the job commits with its order
            raise pgjobs.Discard(f"order {order_id} does not exist")
        # A real shop would call its email provider here, before recording the receipt.
        conn.execute(
            "INSERT INTO receipts (order_id, sent_to) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (order_id, row[0]),
        )
