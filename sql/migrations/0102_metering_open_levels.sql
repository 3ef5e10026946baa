-- depends: 0101_metering_levels 0400_partition_events
-- Metering, faster hourly runs (docs/metering.md, "Performance").
--
-- waybill.resource_levels holds, per project and kind, the sum of the current
-- value of its resources (the value of each resource's latest state row), which
-- is the sum of every value_delta of that project and kind. rollup_hourly keeps
-- it by delta in the transaction that rewrites resource_states. The level at a
-- window's start is then this sum minus the value_delta of the rows at or after
-- it (recent rows, read through an event_time index), so the rollups never read
-- the open segments scattered across resource_states, and valid_to needs no
-- index: updating a seed's valid_to no longer touches any index.
CREATE TABLE waybill.resource_levels (
    project_id  uuid    NOT NULL,
    kind        text    NOT NULL,
    level       numeric NOT NULL,
    CONSTRAINT resource_levels_pkey PRIMARY KEY (project_id, kind),
    CONSTRAINT resource_levels_kind_check CHECK (kind IN ('compute', 'volume', 'domain'))
);
INSERT INTO waybill.resource_levels (project_id, kind, level)
SELECT s.project_id, s.kind, sum(s.value_delta)
  FROM waybill.resource_states s
 GROUP BY s.project_id, s.kind;

DROP INDEX waybill.resource_states_valid_to_idx;
DROP INDEX waybill.resource_states_project_valid_to_idx;
-- One project's rows from an instant on: the dirty windows of a late event.
CREATE INDEX resource_states_project_event_time_idx
    ON waybill.resource_states (project_id, event_time);
-- Room on each page for the new version of a seed row whose valid_to a run
-- updates: no indexed column changes, so it can be a heap-only update.
ALTER TABLE waybill.resource_states SET (fillfactor = 90);
