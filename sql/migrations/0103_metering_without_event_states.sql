-- depends: 0102_metering_open_levels 0401_project_scoped_keys
-- Metering without a state row per event (docs/metering.md, "Performance").
--
-- The rollups no longer keep waybill.resource_states (one row per time-weighted
-- event, the bulk of every run's writes). What they keep instead:
-- - resource_current: each resource's state after its latest applied event,
--   the seed for events that arrive in order;
-- - an index over the time-weighted events of each resource in usage_events,
--   from which a late event's resource is replayed;
-- - resource_levels: now the level at closed_until (it was the level after
--   every applied event);
-- - open_usage: what applied events add to hours not yet closed, per project
--   and hour: for time-weighted metrics the change of level in the hour and
--   that change weighted by the seconds left in the hour; point usage as sums;
-- - domain_steps: the change in attached domains at each instant, for all time,
--   since "most at once" cannot be updated by delta.
-- Everything is derived from the state this migration replaces, so the usage
-- already computed stays exactly as it is.

CREATE TABLE waybill.resource_current (
    project_id      uuid        NOT NULL,
    kind            text        NOT NULL,
    resource_type   text        NOT NULL,
    resource_id     text        NOT NULL,
    event_time      timestamptz NOT NULL,  -- the latest applied event, in (event_time, seq) order
    seq             bigint      NOT NULL,
    active          boolean     NOT NULL,
    replicas        numeric,
    cpu_millicores  numeric,
    memory_mb       numeric,
    size_gb         numeric,
    value           numeric     NOT NULL,
    CONSTRAINT resource_current_pkey PRIMARY KEY (project_id, kind, resource_type, resource_id),
    CONSTRAINT resource_current_kind_check CHECK (kind IN ('compute', 'volume', 'domain'))
);

CREATE TABLE waybill.open_usage (
    project_id          uuid        NOT NULL,
    hour                timestamptz NOT NULL,
    compute_delta       numeric     NOT NULL DEFAULT 0,  -- GB-equivalent
    compute_weighted    numeric     NOT NULL DEFAULT 0,  -- GB-seconds
    storage_delta       numeric     NOT NULL DEFAULT 0,  -- GB
    storage_weighted    numeric     NOT NULL DEFAULT 0,  -- GB-seconds
    build_seconds       numeric     NOT NULL DEFAULT 0,
    bandwidth_gb        numeric     NOT NULL DEFAULT 0,
    CONSTRAINT open_usage_pkey PRIMARY KEY (project_id, hour)
);

CREATE TABLE waybill.domain_steps (
    project_id  uuid        NOT NULL,
    at          timestamptz NOT NULL,
    delta       integer     NOT NULL,
    CONSTRAINT domain_steps_pkey PRIMARY KEY (project_id, at)
);
-- The steps inside the hours a run closes, for every project.
CREATE INDEX domain_steps_at_idx ON waybill.domain_steps (at);

-- A resource's events in time order: the replay of a late event's resource,
-- and the last reset before it.
CREATE INDEX usage_events_resource_idx
    ON waybill.usage_events (project_id, resource_type, resource_id, event_time, seq)
 WHERE event_type IN ('deployment.started', 'deployment.scaled', 'deployment.stopped',
                      'compute.snapshot', 'volume.created', 'volume.resized', 'volume.deleted',
                      'domain.added', 'domain.removed');

INSERT INTO waybill.resource_current
SELECT DISTINCT ON (s.project_id, s.kind, s.resource_type, s.resource_id)
       s.project_id, s.kind, s.resource_type, s.resource_id, s.event_time, s.seq, s.active,
       s.replicas, s.cpu_millicores, s.memory_mb, s.size_gb, s.value
  FROM waybill.resource_states s
 ORDER BY s.project_id, s.kind, s.resource_type, s.resource_id, s.event_time DESC, s.seq DESC;

INSERT INTO waybill.domain_steps (project_id, at, delta)
SELECT s.project_id, s.event_time, sum(s.value_delta)::integer
  FROM waybill.resource_states s
 WHERE s.kind = 'domain'
 GROUP BY s.project_id, s.event_time
HAVING sum(s.value_delta) <> 0;

INSERT INTO waybill.open_usage (project_id, hour, compute_delta, compute_weighted,
                                storage_delta, storage_weighted, build_seconds, bandwidth_gb)
SELECT x.project_id, x.hour, sum(x.cd), sum(x.cw), sum(x.sd), sum(x.sw), sum(x.b), sum(x.g)
  FROM (SELECT s.project_id, date_trunc('hour', s.event_time, 'UTC') AS hour,
               CASE WHEN s.kind = 'compute' THEN s.value_delta ELSE 0 END AS cd,
               CASE WHEN s.kind = 'compute' THEN s.value_delta * extract(epoch FROM
                   date_trunc('hour', s.event_time, 'UTC') + interval '1 hour' - s.event_time) ELSE 0 END AS cw,
               CASE WHEN s.kind = 'volume' THEN s.value_delta ELSE 0 END AS sd,
               CASE WHEN s.kind = 'volume' THEN s.value_delta * extract(epoch FROM
                   date_trunc('hour', s.event_time, 'UTC') + interval '1 hour' - s.event_time) ELSE 0 END AS sw,
               0 AS b, 0 AS g
          FROM waybill.resource_states s, waybill.rollup_state r
         WHERE s.event_time >= r.closed_until AND s.kind <> 'domain'
        UNION ALL
        SELECT p.project_id, p.hour, 0, 0, 0, 0, p.build_seconds, p.bandwidth_gb
          FROM waybill.point_usage p, waybill.rollup_state r
         WHERE p.hour >= r.closed_until) x
 GROUP BY x.project_id, x.hour;

-- The level at closed_until (the first run, with closed_until NULL, finds no rows).
DELETE FROM waybill.resource_levels;
INSERT INTO waybill.resource_levels (project_id, kind, level)
SELECT s.project_id, s.kind, sum(s.value_delta)
  FROM waybill.resource_states s, waybill.rollup_state r
 WHERE s.event_time < r.closed_until
 GROUP BY s.project_id, s.kind
HAVING sum(s.value_delta) <> 0;

DROP TABLE waybill.resource_states;
DROP TABLE waybill.point_usage;
