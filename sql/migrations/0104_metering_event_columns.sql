-- depends: 0103_metering_without_event_states
-- Metering reads what it needs of an event from columns computed once, at
-- insert, instead of per event on every rollup (docs/metering.md, "Performance").
--
-- - waybill.gb_equivalent: the GB-equivalent of a compute shape (CONTRACT.md
--   section 2). It lives here, not in sql/functions, because a stored column
--   depends on it: changing it means recomputing that column, which is a
--   migration.
-- - usage_events.metering_kind: 'compute', 'volume' or 'domain' for the
--   time-weighted event types, NULL for the others (builds, bandwidth).
-- - usage_events.metering_value: the value of the resource's state right after
--   an event that sets the whole state (a "reset"): the GB-equivalent of a
--   start or snapshot (both carry the whole shape: ingestion requires it), the
--   size of a created volume, 1 for an attached domain, 0 after a stop, a
--   delete or a remove. NULL for the modifiers (scaled, resized), whose state
--   depends on the events before them, and for point events.
-- - usage_events_replay_idx replaces usage_events_resource_idx: every resource's
--   time-weighted events in (event_time, seq) order, with what the replay reads,
--   so a rollup over many events reads them already sorted (index only) and a
--   late event finds its resource's last reset.
-- - hourly_usage's hour check uses date_bin (plain arithmetic) rather than
--   date_trunc with a time zone name, which costs a time zone lookup per row.

CREATE FUNCTION waybill.gb_equivalent(p_replicas numeric, p_cpu_millicores numeric,
                                      p_memory_mb numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- 1/1024 = 0.0009765625 exactly: multiplying keeps the value exact
    SELECT greatest(coalesce(p_memory_mb, 0) * 0.0009765625, coalesce(p_cpu_millicores, 0) * 0.001)
           * coalesce(p_replicas, 0)
$$;

ALTER TABLE waybill.usage_events
    ADD COLUMN metering_kind text GENERATED ALWAYS AS (
        CASE WHEN event_type IN ('deployment.started', 'deployment.scaled', 'deployment.stopped',
                                 'compute.snapshot') THEN 'compute'
             WHEN event_type IN ('volume.created', 'volume.resized', 'volume.deleted') THEN 'volume'
             WHEN event_type IN ('domain.added', 'domain.removed') THEN 'domain'
        END) STORED,
    ADD COLUMN metering_value numeric GENERATED ALWAYS AS (
        CASE WHEN event_type IN ('deployment.started', 'compute.snapshot')
                  THEN waybill.gb_equivalent(replicas, cpu_millicores, memory_mb)
             WHEN event_type = 'volume.created' THEN coalesce(size_gb, 0)
             WHEN event_type = 'domain.added' THEN 1
             WHEN event_type IN ('deployment.stopped', 'volume.deleted', 'domain.removed') THEN 0
        END) STORED;

DROP INDEX waybill.usage_events_resource_idx;
CREATE INDEX usage_events_replay_idx
    ON waybill.usage_events (project_id, metering_kind, resource_type, resource_id, event_time, seq)
       INCLUDE (event_type, metering_value, replicas, cpu_millicores, memory_mb, size_gb)
 WHERE metering_kind IS NOT NULL;

-- The replay reads metering_kind from the column now (the function exists only
-- where the repeatable files were applied before this migration).
DROP FUNCTION IF EXISTS waybill.metering_kind(waybill.event_type);

ALTER TABLE waybill.hourly_usage DROP CONSTRAINT hourly_usage_hour_check,
    ADD CONSTRAINT hourly_usage_hour_check
        CHECK (hour = date_bin('1 hour', hour, timestamptz '1970-01-01 00:00+00'));

-- Every hourly run rewrites the current state of each resource it touches (its
-- latest event moves): room on each page lets that be a heap-only update, which
-- leaves the four-column primary key alone.
ALTER TABLE waybill.resource_current SET (fillfactor = 70);
