"""The metering invariant (CONTRACT.md section 2), by property: random event streams,
delivered in random order with rollup runs (of one shard or of all) interleaved at
random points, always end equal to a recomputation from scratch, and to an
independent model of the rules written here in Python; and hourly sums equal daily
equals monthly."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.metering_helpers import at, put, snapshot

BASE = at("2026-03-01 00:00")
END = BASE + timedelta(days=4)
HOUR = timedelta(hours=1)
RESOURCES = {
    "compute": ["web", "worker"], "volume": ["data"], "domain": ["a.example", "b.example"],
}
TYPES = {
    "compute": ["deployment.started", "deployment.scaled", "deployment.stopped",
                "compute.snapshot"],
    "volume": ["volume.created", "volume.resized", "volume.deleted"],
    "domain": ["domain.added", "domain.removed"],
    "point": ["build.completed", "build.failed", "bandwidth.usage", "build.started"],
}
ON = {"deployment.started", "compute.snapshot", "volume.created", "domain.added"}
OFF = {"deployment.stopped", "volume.deleted", "domain.removed"}

offsets = st.one_of(st.integers(0, 72 * 4).map(lambda q: q * 900),  # quarter hours: ties
                    st.integers(0, 72 * 3600))                        # any second


@st.composite
def events(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["compute", "compute", "volume", "domain", "point"]))
    event_type = draw(st.sampled_from(TYPES[kind]))
    resource = draw(st.sampled_from(RESOURCES.get(kind, ["b1"])))
    metrics: dict[str, Any] = {}
    if event_type in ("deployment.started", "compute.snapshot"):
        metrics = {"replicas": draw(st.integers(1, 4)),
                   "cpu_millicores": draw(st.sampled_from([250, 500, 1000, 1500])),
                   "memory_mb": draw(st.sampled_from([256, 512, 1024, 3072]))}
    elif event_type == "deployment.scaled":
        metrics = draw(st.fixed_dictionaries({}, optional={
            "replicas": st.integers(0, 4), "memory_mb": st.sampled_from([512, 2048])}))
        metrics = metrics or {"replicas": 2}
    elif event_type in ("volume.created", "volume.resized"):
        metrics = {"size_gb": draw(st.sampled_from([1, 5, Decimal("2.5")]))}
    elif event_type in ("build.completed", "build.failed"):
        metrics = {"duration_seconds": draw(st.sampled_from([30, Decimal("45.2"), 600]))}
    elif event_type == "bandwidth.usage":
        metrics = {"egress_gb": draw(st.sampled_from([Decimal("0.1"), 1, 7]))}
    return {"kind": kind, "type": event_type, "resource": resource,
            "when": BASE + timedelta(seconds=draw(offsets)), "metrics": metrics}


def model(stored: list[tuple[int, dict[str, Any]]]) -> dict[datetime, tuple[Decimal, ...]]:
    """The rules of docs/metering.md, evaluated directly: hour -> the five quantities."""
    cells: dict[datetime, list[Any]] = defaultdict(lambda: [Decimal(0)] * 4 + [0])
    by_resource: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for seq, e in stored:
        if e["kind"] == "point":
            hour = e["when"].replace(minute=0, second=0)
            if e["type"] != "build.started":
                column = 3 if e["type"] == "bandwidth.usage" else 2
                cells[hour][column] += Decimal(str(next(iter(e["metrics"].values()))))
        else:
            by_resource[(e["kind"], e["resource"])].append((seq, e))
    domain_segments: list[tuple[datetime, datetime]] = []
    for (kind, _), items in by_resource.items():
        items.sort(key=lambda x: (x[1]["when"], x[0]))
        active, shape = False, {}
        timeline: list[tuple[datetime, Decimal]] = []
        for _, e in items:
            if e["type"] in ON:
                active, shape = True, dict(e["metrics"])
            elif e["type"] in OFF:
                active = False
            elif active:
                shape.update(e["metrics"])
            if not active:
                value = Decimal(0)
            elif kind == "compute":
                value = max(Decimal(shape["memory_mb"]) / 1024,
                            Decimal(shape["cpu_millicores"]) / 1000) * shape["replicas"]
            elif kind == "volume":
                value = Decimal(str(shape["size_gb"]))
            else:
                value = Decimal(1)
            timeline.append((e["when"], value))
        for i, (start, value) in enumerate(timeline):
            end = min(timeline[i + 1][0] if i + 1 < len(timeline) else END, END)
            if value == 0 or end <= start:
                continue
            if kind == "domain":
                domain_segments.append((start, end))
                continue
            hour = start.replace(minute=0, second=0)
            while hour < end:
                seconds = Decimal((min(end, hour + HOUR) - max(start, hour)).total_seconds())
                cells[hour][0 if kind == "compute" else 1] += value * seconds
                hour += HOUR
    for start, end in domain_segments:
        hour = start.replace(minute=0, second=0)
        while hour < end:
            instants = [hour] + [s for s, _ in domain_segments if hour < s < hour + HOUR]
            cells[hour][4] = max(cells[hour][4], max(
                sum(1 for s, e in domain_segments if s <= t < e) for t in instants))
            hour += HOUR
    return {h: tuple(v) for h, v in cells.items() if any(v)}


def reset_derived(db: Any) -> None:
    """Forget every derived row and start after the events of earlier examples
    (usage_events is append-only; each example uses a fresh project)."""
    db.execute("""
        DELETE FROM waybill.resource_current; DELETE FROM waybill.resource_levels;
        DELETE FROM waybill.metering_anomalies; DELETE FROM waybill.open_usage;
        DELETE FROM waybill.domain_steps; DELETE FROM waybill.hourly_usage;
        DELETE FROM waybill.daily_usage; DELETE FROM waybill.rollup_dirty_days;
        UPDATE waybill.rollup_shards SET closed_until = NULL,
            watermark = (SELECT coalesce(max(seq), 0) FROM waybill.usage_events)""")


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=st.lists(events(), min_size=1, max_size=30), data=st.data())
def test_any_arrival_order_and_any_runs_equal_a_recomputation_from_scratch(db, stream, data):
    reset_derived(db)
    project = str(uuid.uuid4())
    order = data.draw(st.permutations(range(len(stream))), label="arrival order")
    runs = data.draw(st.lists(st.tuples(st.integers(0, len(stream)), st.integers(0, 80),
                                        st.sampled_from([None, 0, 1])),
                              max_size=6), label="runs (after n events, until hour, shard)")
    stored: list[tuple[int, dict[str, Any]]] = []
    for position, index in enumerate(order):
        for after, until_hour, shard in runs:
            if after == position:  # one shard (the project's or not) or all of them
                db.execute("SELECT waybill.rollup_hourly(%s, p_shard => %s)",
                           (BASE + until_hour * HOUR, shard))
                db.execute("SELECT waybill.rollup_daily(%s, p_shard => %s)",
                           ((BASE + until_hour * HOUR).date(), shard))
        e = stream[index]
        seq = put(db, project, e["type"], e["resource"], e["when"], **e["metrics"])
        stored.append((seq, e))
    db.execute("SELECT waybill.rollup_hourly(%s)", (END,))
    db.execute("SELECT waybill.rollup_daily(%s)", (END.date(),))

    incremental = snapshot(db, [project])
    db.execute("SELECT waybill.recompute_usage_from_scratch(%s)", (END,))
    assert snapshot(db, [project]) == incremental

    hours = {row[1]: tuple(row[2:]) for row in incremental["hourly"]}
    assert hours == model(stored)

    sums = ("sum(compute_gb_seconds), sum(storage_gb_seconds), sum(build_seconds),"
            " sum(bandwidth_gb), max(custom_domains)")
    levels = [db.execute(f"SELECT {sums} FROM {table} WHERE project_id = %s",  # noqa: S608
                         (project,)).fetchone()
              for table in ("waybill.hourly_usage", "waybill.daily_usage",
                            "analytics.monthly_usage")]
    assert levels[0] == levels[1] == levels[2]
