"""docker-compose.yml, the Dockerfile and the multihost deployment files, checked statically
(no Docker engine here): services, dependencies, health checks, scaling, and that every
command names a CLI command, options and modules that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from psycopg.conninfo import conninfo_to_dict

import pgjobs
from pgjobs.cli import app as cli_app
from pgjobs.loader import load_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert match, text
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://localhost:\d+/\w+", test)
    assert match, test
    return match[0]


def test_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "migrate", "worker", "web"}
    assert services["postgres"]["image"].startswith("postgres:")
    major = int(services["postgres"]["image"].split(":")[1].split(".")[0])
    assert major >= 14  # pgjobs needs PostgreSQL 14 or newer
    for name in ("migrate", "worker", "web"):
        assert services[name]["build"] == ".", name


def test_postgres_health_check_uses_pg_isready(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    test = postgres["healthcheck"]["test"]
    assert test[0] in {"CMD", "CMD-SHELL"}
    assert "pg_isready" in " ".join(test)
    env = postgres["environment"]
    assert f"-U {env['POSTGRES_USER']}" in " ".join(test)
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert _command(services["migrate"]) == ["pgjobs", "migrate"]
    assert services["migrate"].get("restart") == "no"  # one-shot
    for name in ("worker", "web"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }, name


def test_worker_is_scalable_and_health_checked(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    # `docker compose up --scale worker=4` needs distinct container names and host ports.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "replicas" not in worker.get("deploy", {})
    argv = _command(worker)
    assert argv[:2] == ["pgjobs", "worker"]
    port = _option(argv, "--health-port")
    assert _healthcheck_url(worker) == f"http://localhost:{port}/healthz"
    # The endpoints listen on loopback unless told otherwise; in a container, scrapers on
    # the compose network reach them only on every interface.
    assert _option(argv, "--health-host") == "0.0.0.0"
    assert "--processes" not in argv  # one process per container: the orchestrator scales
    grace = float(_option(argv, "--shutdown-grace")) if "--shutdown-grace" in argv else 30.0
    assert _seconds(worker["stop_grace_period"]) > grace  # SIGKILL only after the drain


def test_web_app_serves_and_checks_its_own_port(services: dict[str, dict[str, Any]]) -> None:
    web = services["web"]
    argv = _command(web)
    port = _option(argv, "--port")
    assert _option(argv, "--host") == "0.0.0.0"
    assert web["ports"] == [f"{port}:{port}"]
    assert _healthcheck_url(web) == f"http://localhost:{port}/healthz"


def test_every_service_uses_the_same_database(services: dict[str, dict[str, Any]]) -> None:
    env = services["postgres"]["environment"]
    clients = {name: s for name, s in services.items() if name != "postgres"}
    dsns = {name: s["environment"]["PGJOBS_DSN"] for name, s in clients.items()}
    assert set(dsns) == {"migrate", "worker", "web"}
    assert len(set(dsns.values())) == 1, dsns
    params = conninfo_to_dict(next(iter(dsns.values())))
    assert params["host"] == "postgres"  # the service name
    assert params.get("port", "5432") == "5432"
    assert params["user"] == env["POSTGRES_USER"]
    assert params["password"] == env["POSTGRES_PASSWORD"]
    assert params["dbname"] == env["POSTGRES_DB"]


def _check_pgjobs_command(argv: list[str]) -> None:
    """`pgjobs CMD ...` parses as the CLI would parse it (the command and every option
    exist, each option has a valid value), without running it; MODULE:APP loads an App."""
    commands = typer.main.get_command(cli_app).commands
    assert argv[1] in commands, argv
    try:
        context = commands[argv[1]].make_context(f"pgjobs {argv[1]}", argv[2:])
    except Exception as exc:  # click's usage errors (typer may vendor click)
        raise AssertionError(f"{argv}: {exc}") from None
    if argv[1] == "worker":
        assert isinstance(load_app(context.params["app_path"]), pgjobs.App)


def _check_python_module(argv: list[str]) -> None:
    module = argv[argv.index("-m") + 1]
    path = ROOT.joinpath(*module.split("."))
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module


def _check(argv: list[str]) -> None:
    program = Path(argv[0]).name
    if program == "pgjobs":
        _check_pgjobs_command(argv)
    elif program.startswith("python"):
        if "-m" in argv:
            _check_python_module(argv)
    else:
        raise AssertionError(f"unexpected program in {argv}")


def test_compose_commands_exist(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the image's working directory holds examples/
    for name in ("migrate", "worker", "web"):
        _check(_command(services[name]))


@pytest.mark.parametrize(
    "line",
    [
        "pgjobs wroker examples.webapp.jobs:app",
        "pgjobs worker examples.webapp.jobs:app --health-prot 8000",
        "pgjobs worker examples.webapp.jobs:app --health-port 99999",
        "pgjobs worker examples.webapp.jobs:app --health-port",
        "pgjobs worker examples.webapp.jobs:app --concurrency many",
        "pgjobs worker examples.webapp.jobs:nothing",
    ],
)
def test_the_command_check_rejects_a_bad_command_line(
    line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises((AssertionError, pgjobs.PgJobsError)):
        _check(shlex.split(line))


def test_dockerfile_ships_what_the_commands_need() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    for line in ("COPY pgjobs ./pgjobs", "COPY sql ./sql", "RUN pip install .", "COPY examples"):
        assert line in text, line
    assert re.search(r"^USER \w+", text, re.M)  # not root


def test_multihost_deployment_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    folder = ROOT / "examples" / "multihost"
    procfile = dict(
        line.split(":", 1) for line in (folder / "Procfile").read_text().splitlines() if line
    )
    assert set(procfile) == {"release", "web", "worker"}
    for line in procfile.values():
        _check(shlex.split(line.replace("$PORT", "5000")))
    unit = (folder / "pgjobs-worker@.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    _check(shlex.split(exec_start))
    assert "KillMode=mixed" in unit  # SIGTERM to the supervisor only: it drains its children
