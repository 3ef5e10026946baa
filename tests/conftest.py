"""Test fixtures: a real PostgreSQL with pg_cron, a template database, a copy per test.

The server comes from, in order: `WAYBILL_TEST_DATABASE_URL` (any database on a
server you provide; tests create their own databases beside it), a Docker engine
(testcontainers, with the image from docker/postgres.Dockerfile), or the embedded
cluster under .waybill/ (`waybill db up`). The template database is built once
per run with every migration and repeatable file; each test gets its own copy
(CREATE DATABASE ... TEMPLATE), so tests may commit, run pg_cron or race
connections without seeing each other.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from psycopg.conninfo import make_conninfo

from app.config import Settings
from app.db.cluster import Cluster
from app.db.migrate import migrate
from app.web import create_app

PROJECT_DIR = Path(__file__).resolve().parents[1]
# Per run, so that two test runs on one server never drop each other's template.
TEMPLATE = f"waybill_test_template_{os.getpid()}"
INTERNAL_KEY = "test-internal-key"
DASHBOARD_KEY = "test-dashboard-key"


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "absent"
        return False
    return True


def _server_from_docker() -> Iterator[str]:
    from testcontainers.core.image import DockerImage
    from testcontainers.postgres import PostgresContainer

    with DockerImage(path=str(PROJECT_DIR), dockerfile_path="docker/postgres.Dockerfile",
                     tag="waybill-postgres:test") as image:
        container = PostgresContainer(str(image), username="postgres", password="postgres",
                                      dbname="postgres", driver=None)
        container.with_command("postgres -c shared_preload_libraries=pg_cron "
                               "-c cron.database_name=postgres")
        with container:
            yield container.get_connection_url()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An admin URL on a PostgreSQL server with pg_cron preloaded."""
    explicit = os.environ.get("WAYBILL_TEST_DATABASE_URL")
    if explicit:
        yield explicit
    elif _docker_available():
        yield from _server_from_docker()
    else:
        Cluster.default().up()
        yield Cluster.default().url("postgres")


def _admin(server_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(server_url, dbname="postgres"), autocommit=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    """A database with the whole schema, built once per test run."""
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = make_conninfo(server_url, dbname=TEMPLATE)
    migrate(url, schedule=False)
    yield url
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


def clone_database(server_url: str, template_url: str) -> str:
    name = f"waybill_test_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A PostgreSQL cluster of this module's own, with the schema, that it may stop and start."""
    from bench.common import free_port

    cluster = Cluster(home=tmp_path_factory.mktemp("cluster"), port=free_port())
    migrate(cluster.up(), schedule=False)
    yield cluster
    cluster.down()
    shutil.rmtree(cluster.data_dir.parent, ignore_errors=True)


@pytest.fixture
def db_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh database for this test, with the whole schema."""
    url = clone_database(server_url, template_url)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An owner connection to this test's database, in autocommit."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"internal_api_key": INTERNAL_KEY, "dashboard_api_key": DASHBOARD_KEY,
                              "db_pool_min": 1, "db_pool_max": 8}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def client(db_url: str, settings: Settings) -> Iterator[TestClient[Any]]:
    """The real app on this test's database."""
    app = create_app(settings, database_url=db_url)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def internal_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {INTERNAL_KEY}"}
