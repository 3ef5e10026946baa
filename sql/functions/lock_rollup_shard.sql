-- waybill.lock_rollup_shard: take one shard's rollup lock and return its row.
--
-- Input: p_shard, a shard of waybill.rollup_shards. Output: that row, locked
-- FOR UPDATE. Side effects: the shard's transaction-level advisory lock, the
-- one every rollup of the shard (hourly, daily, recomputation) takes, so they
-- serialize per shard; callers that lock several shards take them in shard
-- order, so they cannot deadlock. Errors: 22023 when p_shard is not a shard.
CREATE OR REPLACE FUNCTION waybill.lock_rollup_shard(p_shard integer)
RETURNS waybill.rollup_shards
LANGUAGE plpgsql AS $$
DECLARE
    v_state waybill.rollup_shards;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('waybill.rollups'), p_shard);
    SELECT * INTO v_state FROM waybill.rollup_shards s WHERE s.shard = p_shard FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollups: no shard %, there are % (0 to %)', p_shard,
            (SELECT count(*) FROM waybill.rollup_shards), (SELECT count(*) - 1 FROM waybill.rollup_shards)
            USING ERRCODE = '22023';
    END IF;
    RETURN v_state;
END
$$;
