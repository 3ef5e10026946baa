"""docker-compose.yml stays in step with the settings the service reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.config import ENVIRONMENT_VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def test_compose_names_exactly_the_variables_the_app_reads():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("migrate", "api"):
        names = set(compose["services"][service]["environment"])
        assert names == set(ENVIRONMENT_VARIABLES), service


def test_compose_database_has_pg_cron_preloaded():
    dockerfile = (ROOT / "docker/postgres.Dockerfile").read_text()
    assert "shared_preload_libraries=pg_cron" in dockerfile
    assert "-cron" in dockerfile


def test_readme_documents_every_variable():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in readme]
    assert missing == []
