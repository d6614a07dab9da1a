"""SQLAlchemy: enqueue on the Session's own connection, so the job commits or rolls back
with the session.

    engine = make_engine("postgresql+psycopg://app@db/app")   # SQLAlchemy 2 + psycopg 3
    with Session(engine) as session:
        place_order(session, "a@b.c")
        session.commit()          # the order and its job, or (on rollback) neither
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import URL, DateTime, Engine, String, create_engine, func
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pgjobs

app = pgjobs.App()  # workers: pgjobs worker examples.sqlalchemy_orders.orders:app


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "sa_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


@app.task(name="sa_shop.send_welcome", queue="email")
def send_welcome(order_id: int) -> None:
    """Email the customer (here: nothing)."""


def pg_connection(session: Session) -> psycopg.Connection[Any]:
    """The psycopg connection under the session's current transaction (psycopg dialect)."""
    driver_connection = session.connection().connection.driver_connection
    if not isinstance(driver_connection, psycopg.Connection):
        raise TypeError("use the psycopg driver: postgresql+psycopg://...")
    return driver_connection


def place_order(session: Session, email: str) -> Order:
    """Add an order and enqueue its welcome email in the session's transaction."""
    order = Order(email=email)
    session.add(order)
    session.flush()  # INSERT now, inside the transaction: the order gets its id
    send_welcome.options(conn=pg_connection(session)).enqueue(order.id)
    return order


def make_engine(url: str | URL) -> Engine:
    """An engine on the psycopg 3 driver, with the example's table created."""
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    return engine
