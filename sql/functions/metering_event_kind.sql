-- waybill.metering_kind / waybill.metering_reset: how an event type acts on the
-- state of its resource (docs/metering.md, "The model"). Immutable one-line SQL
-- functions, so the planner inlines them.
--
-- metering_kind: 'compute', 'volume' or 'domain' for time-weighted events; NULL
-- for point events (builds, bandwidth).
-- metering_reset: 'on' when the event sets the whole state and turns it on
-- (started, snapshot, created, added), 'off' when it turns it off (stopped,
-- deleted, removed), NULL when it changes only the fields it carries (scaled,
-- resized) or is not time-weighted.
CREATE OR REPLACE FUNCTION waybill.metering_kind(p_event_type waybill.event_type) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_event_type IN ('deployment.started', 'deployment.scaled', 'deployment.stopped',
                              'compute.snapshot') THEN 'compute'
        WHEN p_event_type IN ('volume.created', 'volume.resized', 'volume.deleted') THEN 'volume'
        WHEN p_event_type IN ('domain.added', 'domain.removed') THEN 'domain'
    END
$$;

CREATE OR REPLACE FUNCTION waybill.metering_reset(p_event_type waybill.event_type) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_event_type IN ('deployment.started', 'compute.snapshot', 'volume.created',
                              'domain.added') THEN 'on'
        WHEN p_event_type IN ('deployment.stopped', 'volume.deleted', 'domain.removed') THEN 'off'
    END
$$;
