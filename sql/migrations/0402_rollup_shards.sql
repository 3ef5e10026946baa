-- depends: 0401_project_scoped_keys
-- The hourly rollup runs in shards of projects (docs/metering.md, "Shards").
--
-- Every derived metering table is per project, so the projects can be split
-- into shards that are rolled up independently, each with its own watermark
-- and closed hours, in concurrent sessions: PostgreSQL runs one statement's
-- window functions and writes on one core, and a backfill or a busy hour is
-- mostly those.
--
-- - waybill.rollup_shard(project_id, shards): which shard a project is in. It
--   is a migration's, not a repeatable function's, because the derived tables
--   of a shard hold its projects only: changing the mapping while shards stand
--   at different points would lose or double an hour. uuid_hash_extended is
--   the function hash partitions store rows by (with their own seed), so
--   PostgreSQL keeps it stable across versions and upgrades.
-- - waybill.rollup_shards: one row per shard (two here), with the bookkeeping
--   rollup_state held: watermark, closed_until, last run times. Both start
--   where rollup_state stood, which is exact: every project was at that point.
--   A rollup of the old code still running (a scheduled run during the
--   deploy) would move that point after it is copied: the migration first
--   waits for it and keeps it out (the table lock below).
-- - waybill.rollup_state becomes a view of what holds for every shard (the
--   lowest watermark and closed_until), so its readers keep their meaning.

LOCK TABLE waybill.rollup_state IN ACCESS EXCLUSIVE MODE;

CREATE FUNCTION waybill.rollup_shard(p_project_id uuid, p_shards integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((uuid_hash_extended(p_project_id, 0) % p_shards + p_shards) % p_shards)::integer
$$;

CREATE TABLE waybill.rollup_shards (
    shard         integer     NOT NULL,
    watermark     bigint      NOT NULL DEFAULT 0,
    closed_until  timestamptz,
    hourly_run_at timestamptz,
    daily_run_at  timestamptz,
    CONSTRAINT rollup_shards_pkey PRIMARY KEY (shard),
    CONSTRAINT rollup_shards_shard_check CHECK (shard >= 0),
    CONSTRAINT rollup_shards_closed_until_check
        CHECK (closed_until = date_trunc('hour', closed_until, 'UTC'))
);
INSERT INTO waybill.rollup_shards (shard, watermark, closed_until, hourly_run_at, daily_run_at)
SELECT g.shard, s.watermark, s.closed_until, s.hourly_run_at, s.daily_run_at
  FROM waybill.rollup_state s CROSS JOIN generate_series(0, 1) g(shard);

-- The view that reads it is re-created from sql/views after the migrations.
DROP VIEW IF EXISTS analytics.project_usage_summary;
DROP TABLE waybill.rollup_state;
-- closed_until: NULL until every shard has closed an hour.
CREATE VIEW waybill.rollup_state AS
SELECT min(s.watermark) AS watermark,
       CASE WHEN bool_and(s.closed_until IS NOT NULL) THEN min(s.closed_until) END AS closed_until,
       min(s.hourly_run_at) AS hourly_run_at, max(s.daily_run_at) AS daily_run_at,
       count(*)::integer AS shards
  FROM waybill.rollup_shards s;

-- The rollups gain a p_shard argument (sql/functions): the old forms go.
DROP FUNCTION IF EXISTS waybill.rollup_hourly(timestamptz, interval);
DROP FUNCTION IF EXISTS waybill.rollup_daily(date);
