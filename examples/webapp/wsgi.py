"""A plain WSGI shop: POST /orders writes an order and enqueues its receipt in ONE transaction.

    python -m examples.webapp.wsgi --port 8080     # needs $PGJOBS_DSN, migrated
    curl localhost:8080/orders -d '{"email": "a@b.c", "lines": [{"sku": "tea", "quantity": 2}]}'
    pgjobs worker examples.webapp.jobs:app          # sends the receipt

If anything fails after the enqueue (here: a line with quantity 0 breaks a CHECK constraint),
the transaction rolls back and takes the job with it: no order without its receipt job, and
no receipt job for an order that does not exist.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import psycopg
from psycopg_pool import ConnectionPool

from examples.webapp.jobs import send_receipt

SCHEMA = Path(__file__).with_name("schema.sql")
StartResponse = Callable[[str, list[tuple[str, str]]], object]


def place_order(conn: psycopg.Connection[Any], email: str, lines: list[dict[str, Any]]) -> int:
    """Write an order and enqueue its receipt inside the caller's open transaction."""
    row = conn.execute("INSERT INTO orders (email) VALUES (%s) RETURNING id", (email,)).fetchone()
    assert row is not None
    order_id = int(row[0])
    send_receipt.options(conn=conn).enqueue(order_id)  # joins the transaction, never commits
    for line in lines:
        conn.execute(
            "INSERT INTO order_lines (order_id, sku, quantity) VALUES (%s, %s, %s)",
            (order_id, line["sku"], line["quantity"]),
        )
    return order_id


def make_app(pool: ConnectionPool) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application, using `pool` for the shop's database."""

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        try:
            if method == "GET" and path == "/healthz":
                status, body = "200 OK", {"ok": True}
            elif method == "POST" and path == "/orders":
                status, body = create_order(pool, _read_json(environ))
            elif method == "GET" and path.startswith("/orders/"):
                status, body = show_order(pool, path.removeprefix("/orders/"))
            else:
                status, body = "404 Not Found", {"error": "no such page"}
        except (ValueError, KeyError, TypeError) as exc:
            status, body = "400 Bad Request", {"error": f"bad request: {exc}"}
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [payload]

    return application


def create_order(pool: ConnectionPool, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    email, lines = str(data["email"]), list(data.get("lines", []))
    try:
        with pool.connection() as conn, conn.transaction():
            order_id = place_order(conn, email, lines)
    except psycopg.errors.IntegrityError as exc:  # rolled back: no order, no job
        return "422 Unprocessable Entity", {"error": str(exc).splitlines()[0]}
    return "201 Created", {"order_id": order_id}


def show_order(pool: ConnectionPool, order_id: str) -> tuple[str, dict[str, Any]]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT o.email, r.sent_at IS NOT NULL FROM orders o "
            "LEFT JOIN receipts r ON r.order_id = o.id WHERE o.id = %s",
            (int(order_id),),
        ).fetchone()
    if row is None:
        return "404 Not Found", {"error": f"no order {order_id}"}
    return "200 OK", {"order_id": int(order_id), "email": row[0], "receipt_sent": row[1]}


def _read_json(environ: dict[str, Any]) -> dict[str, Any]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    data = json.loads(environ["wsgi.input"].read(size) or b"{}")
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def create_tables(conn: psycopg.Connection[Any]) -> None:
    """The shop's tables (idempotent); pgjobs' own come from `pgjobs migrate`."""
    conn.execute(SCHEMA.read_text())


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    options = parser.parse_args()
    with ConnectionPool(os.environ.get("PGJOBS_DSN", ""), min_size=1, max_size=4) as pool:
        with pool.connection() as conn:
            create_tables(conn)
        server = make_server(options.host, options.port, make_app(pool))
        print(f"shop listening on http://{options.host}:{options.port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
