"""`pgjobs workers ls`."""

from __future__ import annotations

import typer

from pgjobs.admin_models import WorkerStatus
from pgjobs.cli import render
from pgjobs.cli.common import Dsn, Json, Schema, err, out

app = typer.Typer(no_args_is_help=True, help="Inspect worker processes.")


@app.command("ls")
def list_workers(json_out: Json = False, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """List registered worker processes with their last heartbeat; SESSION says "lost
    since" while one's connection is gone (its jobs are rescued after its grace), and
    names a foreign backend holding its lock."""
    with render.admin_for(dsn, schema) as admin:
        workers = admin.list_workers()
    if json_out:
        render.print_json(workers)
        return
    if not workers:
        err.print("no workers running")
        return
    columns = ["ID", "HOST", ">PID", "QUEUES", ">BUSY", "STARTED", ">HEARTBEAT AGE", "SESSION"]
    rows = [
        (
            worker.id,
            worker.host,
            worker.pid,
            ", ".join(worker.queues) if worker.queues else "all",
            f"{worker.running}/{worker.concurrency}",
            worker.started_at,
            worker.heartbeat_age,
            _session(worker),
        )
        for worker in workers
    ]
    out.print(render.table(None, columns, rows))


def _session(worker: WorkerStatus) -> str:
    if worker.session == "foreign":
        state = f"lock held by foreign backend {worker.lock_holder_pid}"
        return f"{state}, lost since {worker.lost_at:%H:%M:%S}" if worker.lost_at else state
    return f"lost since {worker.lost_at:%H:%M:%S}" if worker.lost_at else "ok"
