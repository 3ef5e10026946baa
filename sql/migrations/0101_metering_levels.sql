-- depends: 0100_metering
-- Per-project step functions for the rollups (docs/metering.md, "cells"):
-- value_delta is a state row's change of value from the resource's previous
-- row, so a window's usage is its starting level plus the changes inside it,
-- without cutting every resource at every hour.
ALTER TABLE waybill.resource_states
    ADD COLUMN value_delta numeric NOT NULL DEFAULT 0;
UPDATE waybill.resource_states s SET value_delta = d.value_delta
  FROM (SELECT project_id, kind, resource_type, resource_id, event_time, seq,
               value - coalesce(lag(value) OVER (PARTITION BY project_id, kind, resource_type,
                   resource_id ORDER BY event_time, seq), 0) AS value_delta
          FROM waybill.resource_states) d
 WHERE (s.project_id, s.kind, s.resource_type, s.resource_id, s.event_time, s.seq)
     = (d.project_id, d.kind, d.resource_type, d.resource_id, d.event_time, d.seq);
-- The changes inside a window of new hours.
CREATE INDEX resource_states_event_time_idx ON waybill.resource_states (event_time);
-- Not worth its upkeep: readers go by project (the primary key) or by day.
DROP INDEX waybill.hourly_usage_hour_idx;
