"""Helpers for the metering tests: store events directly, run rollups, read usage.

Events are written with SQL (not the HTTP API) because ingestion refuses
timestamps older than EVENT_MAX_AGE and these tests need fixed instants.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

SHAPE = ("replicas", "cpu_millicores", "memory_mb")
_INSERT = """
WITH k AS (
    INSERT INTO waybill.event_keys (project_id, dedupe_key, content_digest, event_id)
    VALUES (%(project_id)s, %(event_id)s, %(event_id)s, %(event_id)s)
)
INSERT INTO waybill.usage_events (event_id, project_id, event_type, resource_type, resource_id,
    event_time, replicas, cpu_millicores, memory_mb, size_gb, quantity, metrics)
VALUES (%(event_id)s, %(project_id)s, %(event_type)s, %(resource_type)s, %(resource_id)s,
    %(event_time)s, %(replicas)s, %(cpu_millicores)s, %(memory_mb)s, %(size_gb)s, %(quantity)s,
    %(metrics)s::jsonb)
RETURNING seq
"""
RESOURCE_TYPE = {"deployment": "deployment", "compute": "deployment", "build": "build",
                 "volume": "volume", "bandwidth": "deployment", "domain": "domain"}


def at(text: str) -> datetime:
    """'2026-03-03 10:20' or '2026-03-03 10:20:30' as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def put(conn: psycopg.Connection[Any], project_id: uuid.UUID | str, event_type: str,
        resource_id: str, when: datetime | str, **metrics: Any) -> int:
    """Store one event as ingestion would; return its seq."""
    if isinstance(when, str):
        when = at(when)
    quantity = metrics.get("duration_seconds", metrics.get("egress_gb"))
    row = {
        "event_id": uuid.uuid4(), "project_id": str(project_id), "event_type": event_type,
        "resource_type": RESOURCE_TYPE[event_type.split(".")[0]], "resource_id": resource_id,
        "event_time": when, "replicas": metrics.get("replicas"),
        "cpu_millicores": metrics.get("cpu_millicores"), "memory_mb": metrics.get("memory_mb"),
        "size_gb": metrics.get("size_gb"), "quantity": quantity,
        "metrics": json.dumps({k: float(v) for k, v in metrics.items()}),
    }
    return int(conn.execute(_INSERT, row).fetchone()[0])


def rollup(conn: psycopg.Connection[Any], until: datetime | str) -> dict[str, Any]:
    if isinstance(until, str):
        until = at(until)
    result: dict[str, Any] = conn.execute("SELECT waybill.rollup_hourly(%s)", (until,)).fetchone()[0]
    conn.execute("SELECT waybill.rollup_daily(%s)", (until.date(),))
    return result


def hourly(conn: psycopg.Connection[Any], project_id: uuid.UUID | str,
           column: str = "compute_gb_seconds") -> dict[datetime, Decimal]:
    rows = conn.execute(
        f"SELECT hour, {column} FROM waybill.hourly_usage WHERE project_id = %s"  # noqa: S608
        f" AND {column} <> 0 ORDER BY hour", (str(project_id),)).fetchall()
    return {r[0]: r[1] for r in rows}


def snapshot(conn: psycopg.Connection[Any], project_ids: list[str] | None = None
             ) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived table, normalized (numeric equality, no timestamps of computation)."""
    where = "" if project_ids is None else " WHERE project_id = ANY(%(p)s::uuid[])"
    params = {"p": project_ids}
    out: dict[str, list[tuple[Any, ...]]] = {}
    queries = {
        "hourly": "SELECT project_id, hour, compute_gb_seconds, storage_gb_seconds, build_seconds,"
                  " bandwidth_gb, custom_domains FROM waybill.hourly_usage{w} ORDER BY 1, 2",
        "daily": "SELECT project_id, day, compute_gb_seconds, storage_gb_seconds, build_seconds,"
                 " bandwidth_gb, custom_domains FROM waybill.daily_usage{w} ORDER BY 1, 2",
        "current": "SELECT project_id, kind, resource_type, resource_id, event_time, seq, active,"
                   " replicas, cpu_millicores, memory_mb, size_gb, value"
                   " FROM waybill.resource_current{w} ORDER BY 1, 2, 3, 4",
        "levels": "SELECT project_id, kind, level FROM waybill.resource_levels{w} ORDER BY 1, 2",
        "open": "SELECT project_id, hour, compute_delta, compute_weighted, storage_delta,"
                " storage_weighted, build_seconds, bandwidth_gb FROM waybill.open_usage{w}"
                " ORDER BY 1, 2",
        "domain_steps": "SELECT project_id, at, delta FROM waybill.domain_steps{w} ORDER BY 1, 2",
        "anomalies": "SELECT seq, anomaly FROM waybill.metering_anomalies{w} ORDER BY 1, 2",
    }
    for name, query in queries.items():
        rows = conn.execute(query.format(w=where), params).fetchall()
        out[name] = [tuple(v.normalize() if isinstance(v, Decimal) else v for v in r)
                     for r in rows]
    return out
