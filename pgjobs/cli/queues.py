"""`pgjobs queues ls|pause|resume`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from pgjobs.admin_models import QueueStats
from pgjobs.cli import render
from pgjobs.cli.common import Dsn, Json, Schema, err, out

app = typer.Typer(no_args_is_help=True, help="List, pause and resume queues.")

QueueName = Annotated[str, typer.Argument(metavar="QUEUE", help="Queue name.")]


@app.command("ls")
def list_queues(json_out: Json = False, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """List queues with their jobs by state (finished: last hour)."""
    with render.admin_for(dsn, schema) as admin:
        queues = admin.list_queues()
    if json_out:
        render.print_json(queues)
        return
    if not queues:
        err.print("no queues yet: a queue exists once a job is enqueued to it")
        return
    out.print(queue_table(None, queues))


def queue_table(title: str | None, queues: list[QueueStats]) -> Table:
    """Queues with their jobs by state; finished counts cover the last hour."""
    columns = [
        "QUEUE", "", ">QUEUED", ">SCHEDULED", ">RUNNING", ">OLDEST WAIT", ">DONE 1H", ">DEAD 1H",
    ]  # fmt: skip
    rows = [
        (
            q.queue,
            Text("paused", style="yellow") if q.paused else "",
            q.queued,
            q.scheduled,
            q.running,
            q.oldest_queued_age,
            q.succeeded_1h,
            Text(str(q.dead_1h), style="red") if q.dead_1h else 0,
        )
        for q in queues
    ]
    return render.table(title, columns, rows)


@app.command()
def pause(
    queue: QueueName,
    create: Annotated[
        bool, typer.Option("--create", help="Create the queue (paused) if it does not exist.")
    ] = False,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Stop every worker claiming from QUEUE (within about a second; running jobs finish)."""
    with render.admin_for(dsn, schema) as admin:
        admin.pause_queue(queue, create=create)
    out.print(f"queue {render.text(repr(queue))} paused")


@app.command()
def resume(queue: QueueName, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """Let workers claim from QUEUE again."""
    with render.admin_for(dsn, schema) as admin:
        admin.resume_queue(queue)
    out.print(f"queue {render.text(repr(queue))} resumed")
