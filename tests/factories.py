"""Builders for request bodies, shared by the tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def recent(minutes_ago: float = 10) -> str:
    return iso(datetime.now(UTC) - timedelta(minutes=minutes_ago))


def event(**overrides: Any) -> dict[str, Any]:
    """A valid deployment.started event; override any field."""
    body: dict[str, Any] = {
        "event_type": "deployment.started",
        "project_id": str(uuid.uuid4()),
        "resource_type": "deployment",
        "resource_id": str(uuid.uuid4()),
        "timestamp": recent(),
        "metrics": {"replicas": 2, "cpu_millicores": 500, "memory_mb": 512},
    }
    body.update(overrides)
    return body
