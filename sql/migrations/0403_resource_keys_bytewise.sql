-- depends: 0104_metering_event_columns 0402_rollup_shards
-- A resource's key (kind, resource_type, resource_id) compares byte by byte
-- (COLLATE "C") in every metering table, whatever the database's locale.
--
-- These are identifiers, never sorted for people to read, and metering sorts
-- and looks them up all the time: the replay index of usage_events, the keys of
-- resource_current and resource_levels, every window partitioned by resource.
-- Under a language collation each comparison goes through the C library's
-- strcoll; bytewise it is a memcmp, and sorts can use abbreviated keys. It
-- also keeps these indexes valid across C library upgrades, which can change a
-- language collation's order under an existing index.
--
-- Equality does not change (collations here are deterministic), so no key
-- becomes equal to another. The columns keep their type; usage_events's
-- replay index is rebuilt (about 20 s per 10 million events, while ingestion
-- waits on the table lock).

-- The view that reads these columns is re-created from sql/views after the
-- migrations.
DROP VIEW IF EXISTS analytics.metering_anomalies;

ALTER TABLE waybill.usage_events
    ALTER COLUMN resource_type TYPE text COLLATE "C",
    ALTER COLUMN resource_id TYPE text COLLATE "C",
    ALTER COLUMN metering_kind TYPE text COLLATE "C";
ALTER TABLE waybill.resource_current
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN resource_type TYPE text COLLATE "C",
    ALTER COLUMN resource_id TYPE text COLLATE "C";
ALTER TABLE waybill.metering_anomalies
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN resource_type TYPE text COLLATE "C",
    ALTER COLUMN resource_id TYPE text COLLATE "C";
ALTER TABLE waybill.resource_levels
    ALTER COLUMN kind TYPE text COLLATE "C";
