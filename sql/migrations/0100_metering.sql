-- depends: 0002_usage_and_keys
-- Metering: the derived state of every time-weighted resource, point usage,
-- anomalies, and the bookkeeping of the incremental rollups (docs/metering.md).
--
-- Everything here is derived from waybill.usage_events and can be rebuilt from it
-- (waybill.recompute_usage_from_scratch). The rollup functions own these tables;
-- readers go through the analytics views and waybill.usage_* functions.

CREATE SCHEMA IF NOT EXISTS analytics;

-- One row per time-weighted event (compute, volume, domain kinds), holding the
-- event's raw inputs and the state of its resource AFTER it, in (event_time, seq)
-- order. [event_time, valid_to) is the segment during which that state holds;
-- valid_to is 'infinity' for the latest row of a resource.
CREATE TABLE waybill.resource_states (
    project_id      uuid               NOT NULL,
    kind            text               NOT NULL,
    resource_type   text               NOT NULL,
    resource_id     text               NOT NULL,
    event_time      timestamptz        NOT NULL,
    seq             bigint             NOT NULL,
    event_type      waybill.event_type NOT NULL,
    -- raw inputs, as sent
    in_replicas     numeric,
    in_cpu          numeric,
    in_memory_mb    numeric,
    in_size_gb      numeric,
    -- state after this event
    active          boolean            NOT NULL,  -- running / exists / attached
    replicas        numeric,
    cpu_millicores  numeric,
    memory_mb       numeric,
    size_gb         numeric,
    value           numeric            NOT NULL,  -- GB-equivalent, GB, or 1 per attached domain
    valid_to        timestamptz        NOT NULL DEFAULT 'infinity',
    CONSTRAINT resource_states_pkey
        PRIMARY KEY (project_id, kind, resource_type, resource_id, event_time, seq),
    CONSTRAINT resource_states_kind_check CHECK (kind IN ('compute', 'volume', 'domain')),
    CONSTRAINT resource_states_segment_check CHECK (valid_to >= event_time)
);
-- Segments that reach past an instant: the new hours of every run, and a late
-- event's hours within one project.
CREATE INDEX resource_states_valid_to_idx ON waybill.resource_states (valid_to);
CREATE INDEX resource_states_project_valid_to_idx
    ON waybill.resource_states (project_id, valid_to, event_time);

-- Build seconds and egress per project-hour, accumulated by delta: each event is
-- added exactly once, in the transaction that advances the watermark past it.
CREATE TABLE waybill.point_usage (
    project_id     uuid        NOT NULL,
    hour           timestamptz NOT NULL,
    build_seconds  numeric     NOT NULL DEFAULT 0,
    bandwidth_gb   numeric     NOT NULL DEFAULT 0,
    CONSTRAINT point_usage_pkey PRIMARY KEY (project_id, hour)
);
CREATE INDEX point_usage_hour_idx ON waybill.point_usage (hour);

-- Events metering could not apply as sent. Re-derived whenever the resource is
-- replayed, so it always equals what a recomputation from scratch would find.
CREATE TABLE waybill.metering_anomalies (
    seq            bigint             NOT NULL,
    anomaly        text               NOT NULL,
    project_id     uuid               NOT NULL,
    kind           text               NOT NULL,
    resource_type  text               NOT NULL,
    resource_id    text               NOT NULL,
    event_type     waybill.event_type NOT NULL,
    event_time     timestamptz        NOT NULL,
    detail         text               NOT NULL,
    CONSTRAINT metering_anomalies_pkey PRIMARY KEY (seq, anomaly),
    CONSTRAINT metering_anomalies_anomaly_check CHECK (anomaly IN (
        'stop_without_running', 'scale_without_running', 'resize_unknown_volume',
        'delete_unknown_volume', 'remove_unattached_domain', 'out_of_order'))
);
CREATE INDEX metering_anomalies_project_idx
    ON waybill.metering_anomalies (project_id, event_time);

-- The single row of rollup bookkeeping: every event with seq <= watermark is in
-- resource_states / point_usage; every hour before closed_until is in hourly_usage.
CREATE TABLE waybill.rollup_state (
    id            boolean     NOT NULL DEFAULT true,
    watermark     bigint      NOT NULL DEFAULT 0,
    closed_until  timestamptz,
    hourly_run_at timestamptz,
    daily_run_at  timestamptz,
    CONSTRAINT rollup_state_pkey PRIMARY KEY (id),
    CONSTRAINT rollup_state_single_row_check CHECK (id),
    CONSTRAINT rollup_state_closed_until_check
        CHECK (closed_until = date_trunc('hour', closed_until, 'UTC'))
);
INSERT INTO waybill.rollup_state (id) VALUES (true);

-- Days whose hourly cells changed since daily_usage was last computed for them.
CREATE TABLE waybill.rollup_dirty_days (
    project_id  uuid NOT NULL,
    day         date NOT NULL,
    CONSTRAINT rollup_dirty_days_pkey PRIMARY KEY (project_id, day)
);

-- Monthly and ranged reads of one project.
CREATE INDEX hourly_usage_hour_idx ON waybill.hourly_usage (hour);
