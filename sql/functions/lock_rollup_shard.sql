-- waybill.lock_rollup_shard: take one shard's rollup lock and return its row.
--
-- Inputs: p_shard, a shard of waybill.rollup_shards; p_wait: wait for the lock
-- (default), or, false, take it only if no other session holds it.
-- Output: that row, locked FOR UPDATE; NULL when p_wait is false and another
-- session holds the lock. Side effects: the shard's transaction-level
-- advisory lock, the one every rollup of the shard (hourly, daily,
-- recomputation, the scheduled runs) takes, so they serialize per shard;
-- callers that lock several shards take them in shard order, so they cannot
-- deadlock. Errors: 22023 when p_shard is not a shard.

-- The one-argument form of migration 0402's time; dropped here, in the same
-- transaction as every function is re-created, so no rollup finds it missing.
DROP FUNCTION IF EXISTS waybill.lock_rollup_shard(integer);

CREATE OR REPLACE FUNCTION waybill.lock_rollup_shard(p_shard integer, p_wait boolean DEFAULT true)
RETURNS waybill.rollup_shards
LANGUAGE plpgsql AS $$
DECLARE
    v_state waybill.rollup_shards;
BEGIN
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock(hashtext('waybill.rollups'), p_shard);
    ELSIF NOT pg_try_advisory_xact_lock(hashtext('waybill.rollups'), p_shard) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_state FROM waybill.rollup_shards s WHERE s.shard = p_shard FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollups: no shard %, there are % (0 to %)', p_shard,
            (SELECT count(*) FROM waybill.rollup_shards), (SELECT count(*) - 1 FROM waybill.rollup_shards)
            USING ERRCODE = '22023';
    END IF;
    RETURN v_state;
END
$$;
