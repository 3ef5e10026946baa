-- waybill.metering_reset: how an event type acts on the state of its resource
-- (docs/metering.md, "The model"). An immutable one-line SQL function, so the
-- planner inlines it.
--
-- 'on' when the event sets the whole state and turns it on (started, snapshot,
-- created, added), 'off' when it turns it off (stopped, deleted, removed), NULL
-- when it changes only the fields it carries (scaled, resized) or is not
-- time-weighted. (Which kind of resource an event acts on is the stored column
-- usage_events.metering_kind, migration 0104.)
CREATE OR REPLACE FUNCTION waybill.metering_reset(p_event_type waybill.event_type) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_event_type IN ('deployment.started', 'compute.snapshot', 'volume.created',
                              'domain.added') THEN 'on'
        WHEN p_event_type IN ('deployment.stopped', 'volume.deleted', 'domain.removed') THEN 'off'
    END
$$;
