-- waybill.rollup_hourly: bring hourly_usage up to date with every committed event.
--
-- Inputs: p_until, an hour boundary (UTC): hours before it are closed and get
-- computed, later hours wait for a later run. p_max_wait: how long to wait for
-- transactions still writing events below the safe upper bound. p_shard: the
-- shard of projects to roll up (waybill.rollup_shards); NULL: every shard, one
-- after the other, in this transaction. Shards are independent: concurrent
-- sessions can roll up different shards at once (docs/metering.md, "Shards").
-- Reads: usage_events with seq in (watermark, safe upper bound], through
-- usage_events_replay_idx for the time-weighted ones; for a resource whose new
-- events come before its latest applied one (late), its own events from its
-- last reset on; resource_current, resource_levels, open_usage and
-- domain_steps (docs/metering.md).
-- Output: jsonb summary {shard, events, resources, dirty_days, watermark,
-- closed_until, waited_for_writers, timings (milliseconds per step)}; for every
-- shard: the sums, closed_until and waited_for_writers, and each shard's own
-- summary under `shards`.
-- Side effects: resource_current, resource_levels, open_usage, domain_steps,
-- metering_anomalies, hourly_usage, rollup_dirty_days and rollup_shards, for the
-- shard's projects only, all in the caller's transaction, so a run that fails
-- changes nothing. Concurrent runs of one shard serialize on an advisory lock.
-- Errors: 22023 when p_until is not an hour boundary or p_shard is not a
-- shard; 25001 unless READ COMMITTED
-- (each statement must see the events committed while the run waited for them);
-- 55P03 when writers are still open after p_max_wait (nothing changed; retry);
-- 55000 when the events' sequence caches numbers or is below the watermark
-- (below: the safe upper bound).
CREATE OR REPLACE FUNCTION waybill.rollup_hourly(p_until timestamptz,
                                                 p_max_wait interval DEFAULT '5 minutes',
                                                 p_shard integer DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_state      waybill.rollup_shards;
    v_shards     integer;
    v_runs       jsonb := '[]';
    v_hi         bigint;
    v_seq_cache  bigint;
    v_db         oid;
    v_event_tables oid[];  -- usage_events and its partitions
    v_vxids      text[];
    v_waited     integer := 0;
    v_deadline   timestamptz;
    v_from       timestamptz;
    v_to         timestamptz;
    v_events     bigint;
    v_resources  bigint;
    v_late       bigint;
    v_cells      bigint;
    v_lo         timestamptz;
    v_mark       timestamptz := clock_timestamp();
    v_timings    jsonb := '{}';
    v_parallel_setup text := current_setting('parallel_setup_cost');
    v_parallel_tuple text := current_setting('parallel_tuple_cost');
    v_mergejoin      text := current_setting('enable_mergejoin');
    v_sort           text := current_setting('enable_sort');
    v_stats_target   text := current_setting('default_statistics_target');
    v_backfill       boolean;
BEGIN
    IF p_until IS NULL OR p_until <> waybill.utc_hour(p_until) THEN
        RAISE EXCEPTION 'rollup_hourly: p_until must be an hour boundary, got %', p_until
            USING ERRCODE = '22023';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'rollup_hourly must run in READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = '25001';
    END IF;
    IF p_shard IS NULL THEN
        FOR v_state IN SELECT * FROM waybill.rollup_shards s ORDER BY s.shard LOOP
            v_runs := v_runs || waybill.rollup_hourly(p_until, p_max_wait, v_state.shard);
        END LOOP;
        RETURN jsonb_build_object(
            'events', (SELECT sum((r->>'events')::bigint) FROM jsonb_array_elements(v_runs) r),
            'resources', (SELECT sum((r->>'resources')::bigint) FROM jsonb_array_elements(v_runs) r),
            'dirty_days', (SELECT sum((r->>'dirty_days')::bigint) FROM jsonb_array_elements(v_runs) r),
            'waited_for_writers',
                (SELECT bool_or((r->>'waited_for_writers')::boolean) FROM jsonb_array_elements(v_runs) r),
            'closed_until', (SELECT s.closed_until FROM waybill.rollup_state s),
            'shards', v_runs);
    END IF;
    v_state := waybill.lock_rollup_shard(p_shard);
    v_shards := (SELECT count(*) FROM waybill.rollup_shards);
    -- A backfill sorts and stages millions of rows; keep them in memory when we
    -- can. temp_buffers only takes before the session's first temporary table.
    PERFORM set_config('work_mem', '1GB', true)
     WHERE pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('1GB');
    -- Row estimates for the temporary tables are rough; JIT compiling for a
    -- plan that then touches a few thousand rows costs more than it saves.
    PERFORM set_config('jit', 'off', true);
    -- The temporary tables are analyzed for their row counts and rough value
    -- ranges; a sample of 3,000 rows tells those (the default, 30,000, costs
    -- an hourly run 1 to 2 ms a table). Restored after the last one.
    PERFORM set_config('default_statistics_target', '10', true);
    -- Plans depend on how many events are new (an hour's worth: by seq and a
    -- sort; a backfill: the replay index, already sorted), so plan each
    -- statement for this run's values, never a generic plan of an earlier one.
    PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    BEGIN
        PERFORM set_config('temp_buffers', '512MB', true)
         WHERE pg_size_bytes(current_setting('temp_buffers')) < pg_size_bytes('512MB');
    EXCEPTION WHEN invalid_parameter_value OR cant_change_runtime_param THEN
        NULL;  -- this session already used temporary tables: keep its setting
    END;

    -- The safe upper bound. An insert takes RowExclusiveLock on the table it
    -- names (usage_events, or one of its partitions straight) when its
    -- statement starts, before the seq defaults of its rows are drawn, and
    -- keeps it until its transaction ends. So every transaction that drew a
    -- seq <= v_hi either has ended or is among the holders of those locks
    -- listed below (in this database: a copy made from it as a template has
    -- the same oids); once those are gone, every seq <= v_hi is committed
    -- (visible to our next statements) or never will be. Nothing below v_hi
    -- can appear later, so the watermark never skips. (A seq must come from
    -- the sequence: one given explicitly is not covered.) v_hi is read from
    -- the sequence's row: pg_sequence_last_value() would hold RowExclusiveLock
    -- on the sequence for the whole run, so an ALTER SEQUENCE would wait for
    -- the run and every insert for the ALTER; and it says NULL after a setval
    -- (..., false), where the last number handed out is last_value - 1.
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END INTO v_hi
      FROM waybill.usage_events_seq_seq s;
    -- The bound also needs the sequence to hand out one number at a time: with
    -- a cache, a session draws numbers ahead, while an earlier insert holds
    -- the lock, and inserts with them later, below a watermark a run may have
    -- passed. And it must not have been set back below the watermark (a
    -- restore of the events alone): new events would get numbers already
    -- passed. Either way those events would never be billed: refuse to run.
    -- Checked after v_hi is read, so a change committed before it is seen.
    v_seq_cache := (SELECT s.seqcache FROM pg_sequence s
                     WHERE s.seqrelid = 'waybill.usage_events_seq_seq'::regclass);
    IF v_seq_cache <> 1 THEN
        RAISE EXCEPTION 'rollup_hourly: waybill.usage_events_seq_seq must have CACHE 1, it has CACHE %',
            v_seq_cache USING ERRCODE = '55000',
            HINT = 'ALTER SEQUENCE waybill.usage_events_seq_seq CACHE 1, then restart every '
                   'session that inserted events since: each still holds the numbers it cached';
    END IF;
    IF v_hi < v_state.watermark THEN
        RAISE EXCEPTION 'rollup_hourly: waybill.usage_events_seq_seq is at %, below shard %''s watermark %',
            v_hi, p_shard, v_state.watermark USING ERRCODE = '55000',
            HINT = 'new events would get numbers the rollups have passed: setval it to the highest '
                   'seq in usage_events, or above the highest watermark, whichever is greater; '
                   'waybill.recompute_usage_from_scratch() then counts events numbered below it';
    END IF;
    v_db := (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
    v_event_tables := ARRAY(SELECT t.relid FROM pg_partition_tree('waybill.usage_events') t);
    SELECT array_agg(DISTINCT l.virtualtransaction) INTO v_vxids
      FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.database = v_db AND l.relation = ANY (v_event_tables)
       AND l.mode = 'RowExclusiveLock' AND l.granted
       AND l.pid IS DISTINCT FROM pg_backend_pid();  -- a prepared transaction's pid is NULL
    v_deadline := clock_timestamp() + p_max_wait;
    WHILE v_vxids IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_locks l
         WHERE l.locktype = 'relation' AND l.database = v_db AND l.relation = ANY (v_event_tables)
           AND l.virtualtransaction = ANY (v_vxids))
    LOOP
        IF clock_timestamp() > v_deadline THEN
            RAISE EXCEPTION 'rollup_hourly: transactions writing usage_events still open after %',
                p_max_wait USING ERRCODE = '55P03',
                DETAIL = 'still open: ' || coalesce((
                    SELECT string_agg(DISTINCT coalesce('pid ' || l.pid, 'prepared transaction '
                                                        || l.virtualtransaction), ', ')
                      FROM pg_locks l WHERE l.virtualtransaction = ANY (v_vxids)), 'none, just now'),
                HINT = 'a long transaction holds rows below the watermark; the next run retries';
        END IF;
        PERFORM pg_sleep(0.005);
        v_waited := v_waited + 1;
    END LOOP;
    -- A backfill (over a million new seqs: weeks of events) reads its state
    -- events from the replay index, already sorted, and sums its point usage
    -- with parallel workers, in a hash table; an hour's worth is read by seq
    -- and sorted, in this process (starting workers costs more than it saves).
    -- The planner cannot tell the two apart here: it guesses that the shard
    -- filter keeps 0.5 % of the rows, not half.
    v_backfill := v_hi - v_state.watermark > 1000000;
    v_timings := v_timings || jsonb_build_object('wait_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    DROP TABLE IF EXISTS pg_temp._m_late, pg_temp._m_rows, pg_temp._m_final,
        pg_temp._m_changes, pg_temp._m_dsteps, pg_temp._m_win;

    -- 1. One pass over the new events in (resource, event_time, seq) order (a
    -- backfill reads them sorted from the replay index; an hour's worth is
    -- sorted in memory). A reset's value is stored with the event
    -- (metering_value); in `code`, -1 stands for "off" (value 0, not active),
    -- NULL for a modifier, whose state depends on the rows before it; `effect`
    -- says the same as a small integer (0 on, 1 off, 2 modifier; 3 for "no
    -- next row"), cheaper to carry and compare.
    -- The pass keeps only the rows later steps need: those whose change is not
    -- zero or not known yet (a modifier, the row after one, each resource's
    -- first row, whose change needs the seed), the reset before a modifier
    -- (the modifier's starting state), each resource's last row (its new
    -- current state; n counts its new events), every off event (an anomaly
    -- when nothing was on), and rows that arrived after a later event of
    -- their resource (max_seq > seq: the out_of_order check). A row it drops
    -- changes no usage: an on reset after one of the same value (its shape
    -- could differ, but only a modifier right after it or the last row would
    -- read that, and both are kept).
    -- Each resource's first row carries its seed, the current state before
    -- this run (c_*; NULL for a new resource): found here once, for the late
    -- check, the replay and the changes alike, and looked up for first rows
    -- only (OFFSET 0 keeps `r.n = 1` a test before the lookup; as a join
    -- condition it was checked after it, for every row).
    PERFORM set_config('enable_sort', 'off', true) WHERE v_backfill;
    CREATE TEMP TABLE _m_rows ON COMMIT DROP AS
    SELECT r.*, c.event_time AS c_time, c.seq AS c_seq, c.active AS c_active,
           c.replicas AS c_replicas, c.cpu_millicores AS c_cpu, c.memory_mb AS c_memory,
           c.size_gb AS c_size, c.value AS c_value
      FROM (
        SELECT e.project_id, e.kind, e.resource_type, e.resource_id, e.event_time, e.seq,
               e.event_type, e.replicas, e.cpu_millicores, e.memory_mb, e.size_gb, e.code,
               e.effect, lag(e.code) OVER w AS prev_code, lead(e.effect, 1, 3) OVER w AS next_effect,
               count(*) OVER w AS n, max(e.seq) OVER w AS max_seq
          FROM (SELECT e.project_id, e.metering_kind AS kind, e.resource_type, e.resource_id,
                       e.event_time, e.seq, e.event_type, e.replicas, e.cpu_millicores,
                       e.memory_mb, e.size_gb,
                       CASE WHEN e.event_type IN ('deployment.stopped', 'volume.deleted',
                                                  'domain.removed') THEN -1
                            ELSE e.metering_value END AS code,
                       CASE WHEN e.metering_value IS NULL THEN 2
                            WHEN e.event_type IN ('deployment.stopped', 'volume.deleted',
                                                  'domain.removed') THEN 1
                            ELSE 0 END::smallint AS effect
                  FROM waybill.usage_events e
                 WHERE e.seq > v_state.watermark AND e.seq <= v_hi AND e.metering_kind IS NOT NULL
                   AND waybill.rollup_shard(e.project_id, v_shards) = p_shard
               ) e
        WINDOW w AS (PARTITION BY e.project_id, e.kind, e.resource_type, e.resource_id
                     ORDER BY e.event_time, e.seq ROWS UNBOUNDED PRECEDING)
    ) r
      LEFT JOIN LATERAL (
            SELECT c.* FROM waybill.resource_current c
             WHERE r.n = 1 AND c.project_id = r.project_id AND c.kind = r.kind
               AND c.resource_type = r.resource_type AND c.resource_id = r.resource_id
            OFFSET 0) c ON true
     WHERE r.code IS DISTINCT FROM r.prev_code OR r.effect > 0 OR r.next_effect >= 2
        OR r.max_seq > r.seq;
    PERFORM set_config('enable_sort', v_sort, true);
    ANALYZE _m_rows (n);

    -- 2. Late resources: a new event comes before the resource's latest applied
    -- one (new seqs are higher, so a tie in time is in order); the first row
    -- the pass kept for a resource is its earliest new event, t0. Such a
    -- resource is replayed from usage_events, from its last applied reset at
    -- or before t0 (after a reset the state no longer depends on what came
    -- before), or from its first event; its rows from the pass go.
    CREATE TEMP TABLE _m_late ON COMMIT DROP AS
    SELECT r.project_id, r.kind, r.resource_type, r.resource_id, r.event_time AS t0,
           a.event_time AS anchor_time, a.seq AS anchor_seq
      FROM _m_rows r
      LEFT JOIN LATERAL (
            SELECT e.event_time, e.seq FROM waybill.usage_events e
             WHERE e.project_id = r.project_id AND e.metering_kind = r.kind
               AND e.resource_type = r.resource_type AND e.resource_id = r.resource_id
               AND e.metering_value IS NOT NULL  -- a reset
               AND e.event_time <= r.event_time AND e.seq <= v_state.watermark
             ORDER BY e.event_time DESC, e.seq DESC LIMIT 1) a ON true
     WHERE r.n = 1 AND r.event_time < r.c_time;
    ANALYZE _m_late (t0);  -- the row count is what the plans below need
    v_late := (SELECT count(*) FROM _m_late);
    IF v_late > 0 THEN
        DELETE FROM _m_rows r USING _m_late l
         WHERE r.project_id = l.project_id AND r.kind = l.kind
           AND r.resource_type = l.resource_type AND r.resource_id = l.resource_id;
    END IF;
    v_timings := v_timings || jsonb_build_object('scan_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 3. The replay of the rest, per resource in (event_time, seq) order: the
    -- in-order rows whose state or change the pass could not know (modifiers
    -- and the rows right after one), each after its starting state (the reset
    -- before a modifier kept in step 1, or the seed, resource_current, before
    -- a resource's first row), and every late resource twice, from its
    -- anchor: with the applied events only (`old`) and with the new ones too;
    -- the difference is what changes.
    -- A "reset" sets the whole state (a seed or an anchor is one); a modifier
    -- (scaled, resized) changes the fields it carries. A field's value is its
    -- last non-null value (nth_value at the position it was last set), never
    -- older than the last "on" reset, since an "on" carries every field. One
    -- sort, by (old, resource, event_time, seq), serves every window.
    -- `settled` marks the in-order rows step 1 already knows (seeds and the
    -- resets before a modifier are only starting states here).
    -- The result, _m_final: every replayed event with its state after it, its
    -- change of value and whether its resource was active before it: the
    -- resets step 1 settled (a resource's first row against its seed), and
    -- the others from the replay (seeds and anchors are starting states only).
    CREATE TEMP TABLE _m_final ON COMMIT DROP AS
    WITH input AS (
        SELECT false AS old, false AS late, r.project_id, r.kind, r.resource_type, r.resource_id,
               r.c_time AS event_time, r.c_seq AS seq, NULL::waybill.event_type AS event_type,
               true AS is_seed,
               CASE WHEN r.c_active THEN 'on' ELSE 'off' END AS reset,
               r.c_replicas AS f_r, r.c_cpu AS f_c, r.c_memory AS f_m, r.c_size AS f_s,
               true AS settled, false AS last_in_run
          FROM _m_rows r
         WHERE r.n = 1 AND r.code IS NULL AND r.c_time IS NOT NULL
        UNION ALL
        SELECT false, false, r.project_id, r.kind, r.resource_type, r.resource_id, r.event_time,
               r.seq, r.event_type, false, waybill.metering_reset(r.event_type),
               r.replicas, r.cpu_millicores, r.memory_mb, r.size_gb,
               r.code IS NOT NULL AND (r.prev_code IS NOT NULL OR r.n = 1), r.next_effect = 3
          FROM _m_rows r
         WHERE r.code IS NULL OR (r.prev_code IS NULL AND r.n > 1) OR r.next_effect = 2
        UNION ALL
        SELECT v.old, true, l.project_id, l.kind, l.resource_type, l.resource_id, e.event_time,
               e.seq, e.event_type, (e.event_time, e.seq) IS NOT DISTINCT FROM (l.anchor_time, l.anchor_seq),
               waybill.metering_reset(e.event_type),
               e.replicas, e.cpu_millicores, e.memory_mb, e.size_gb, false, false
          FROM _m_late l
          JOIN LATERAL (
                SELECT e.event_time, e.seq, e.event_type, e.replicas, e.cpu_millicores,
                       e.memory_mb, e.size_gb
                  FROM waybill.usage_events e
                 WHERE e.project_id = l.project_id AND e.metering_kind = l.kind
                   AND e.resource_type = l.resource_type AND e.resource_id = l.resource_id
                   AND (l.anchor_time IS NULL OR (e.event_time, e.seq) >= (l.anchor_time, l.anchor_seq))
                   AND e.seq <= v_hi) e ON true
         CROSS JOIN (VALUES (false), (true)) v(old)
         WHERE NOT v.old OR e.seq <= v_state.watermark
    ), numbered AS (
        SELECT i.*, (row_number() OVER w)::integer AS ord
          FROM input i
        WINDOW w AS (PARTITION BY i.old, i.project_id, i.kind, i.resource_type, i.resource_id
                     ORDER BY i.event_time, i.seq)
    ), located AS (
        -- where each field was last set: one sort serves every window below
        SELECT i.*,
               max(CASE WHEN i.reset IS NOT NULL THEN i.ord END) OVER w AS p_reset,
               max(CASE WHEN i.f_r IS NOT NULL THEN i.ord END) OVER w AS p_r,
               max(CASE WHEN i.f_c IS NOT NULL THEN i.ord END) OVER w AS p_c,
               max(CASE WHEN i.f_m IS NOT NULL THEN i.ord END) OVER w AS p_m,
               max(CASE WHEN i.f_s IS NOT NULL THEN i.ord END) OVER w AS p_s
          FROM numbered i
        WINDOW w AS (PARTITION BY i.old, i.project_id, i.kind, i.resource_type, i.resource_id
                     ORDER BY i.event_time, i.seq ROWS UNBOUNDED PRECEDING)
    ), carried AS (
        SELECT c.*,
               coalesce(nth_value(c.reset, c.p_reset) OVER w = 'on', false) AS active,
               nth_value(c.f_r, c.p_r) OVER w AS s_r, nth_value(c.f_c, c.p_c) OVER w AS s_c,
               nth_value(c.f_m, c.p_m) OVER w AS s_m, nth_value(c.f_s, c.p_s) OVER w AS s_s
          FROM located c
        WINDOW w AS (PARTITION BY c.old, c.project_id, c.kind, c.resource_type, c.resource_id
                     ORDER BY c.event_time, c.seq ROWS UNBOUNDED PRECEDING)
    ), valued AS (
        SELECT k.old, k.late, k.project_id, k.kind, k.resource_type, k.resource_id, k.event_time,
               k.seq, k.event_type, k.is_seed, k.settled, k.last_in_run, k.active,
               CASE WHEN k.active AND k.kind = 'compute' THEN k.s_r END AS replicas,
               CASE WHEN k.active AND k.kind = 'compute' THEN k.s_c END AS cpu_millicores,
               CASE WHEN k.active AND k.kind = 'compute' THEN k.s_m END AS memory_mb,
               CASE WHEN k.active AND k.kind = 'volume' THEN k.s_s END AS size_gb,
               CASE WHEN NOT k.active THEN 0
                    WHEN k.kind = 'compute' THEN waybill.gb_equivalent(k.s_r, k.s_c, k.s_m)
                    WHEN k.kind = 'volume' THEN coalesce(k.s_s, 0)
                    ELSE 1 END AS value
          FROM carried k
    ), side AS (
        SELECT v.*,
               v.value - coalesce(lag(v.value) OVER w, 0) AS value_delta,
               coalesce(lag(v.active) OVER w, false) AS prev_active,
               -- late rows: the last of the replay; in-order rows: the last of the run
               CASE WHEN v.late THEN lead(v.seq) OVER w IS NULL ELSE v.last_in_run END AS is_last
          FROM valued v
        WINDOW w AS (PARTITION BY v.old, v.project_id, v.kind, v.resource_type, v.resource_id
                     ORDER BY v.event_time, v.seq)
    )
    SELECT false AS old, false AS late, r.project_id, r.kind, r.resource_type, r.resource_id, r.event_time,
           r.seq, r.event_type, r.code >= 0 AS active,
           CASE WHEN r.code >= 0 AND r.kind = 'compute' THEN r.replicas END AS replicas,
           CASE WHEN r.code >= 0 AND r.kind = 'compute' THEN r.cpu_millicores END AS cpu_millicores,
           CASE WHEN r.code >= 0 AND r.kind = 'compute' THEN r.memory_mb END AS memory_mb,
           CASE WHEN r.code >= 0 AND r.kind = 'volume' THEN r.size_gb END AS size_gb,
           greatest(r.code, 0) AS value,
           greatest(r.code, 0) - CASE WHEN r.n = 1 THEN coalesce(r.c_value, 0)
                                      ELSE greatest(r.prev_code, 0) END AS value_delta,
           CASE WHEN r.n = 1 THEN coalesce(r.c_active, false) ELSE r.prev_code >= 0 END AS prev_active,
           r.next_effect = 3 AS is_last
      FROM _m_rows r
     WHERE r.code IS NOT NULL AND (r.prev_code IS NOT NULL OR r.n = 1)
    UNION ALL
    SELECT s.old, s.late, s.project_id, s.kind, s.resource_type, s.resource_id, s.event_time,
           s.seq, s.event_type, s.active, s.replicas, s.cpu_millicores, s.memory_mb, s.size_gb,
           s.value, s.value_delta, s.prev_active, s.is_last
      FROM side s
     WHERE NOT s.is_seed AND NOT s.settled;
    SELECT count(*) + v_late, coalesce(sum(r.n), 0) INTO v_resources, v_events
      FROM _m_rows r WHERE r.next_effect = 3;
    v_events := v_events
              + (SELECT count(*) FROM _m_final f WHERE f.late AND NOT f.old AND f.seq > v_state.watermark);
    v_timings := v_timings || jsonb_build_object('replay_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 4. State and anomalies. out_of_order depends on arrival order alone, so it
    -- is decided once, when the event arrives: an event is out of order when an
    -- earlier-arrived event of its resource (lower seq) has a later time. Only
    -- resources whose arrival and time order disagree can have one: the late
    -- ones and those step 1 flagged. Their events from the starting point on
    -- (anchor or seed; nothing before it is later in time) are read in seq order.
    -- The other anomalies are re-derived for every replayed event.
    INSERT INTO waybill.metering_anomalies (seq, anomaly, project_id, kind, resource_type,
                                            resource_id, event_type, event_time, detail)
    SELECT o.seq, 'out_of_order', o.project_id, o.kind, o.resource_type, o.resource_id,
           o.event_type, o.event_time,
           format('event time %s is before %s, already received for this resource',
                  o.event_time, o.prior_max)
      FROM (SELECT f.project_id, f.kind, f.resource_type, f.resource_id, e.seq, e.event_type,
                   e.event_time,
                   max(e.event_time) OVER (PARTITION BY f.project_id, f.kind, f.resource_type,
                                                        f.resource_id
                                           ORDER BY e.seq
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                       AS prior_max
              FROM (SELECT l.project_id, l.kind, l.resource_type, l.resource_id,
                           l.anchor_time AS from_time, l.anchor_seq AS from_seq
                      FROM _m_late l
                    UNION ALL
                    SELECT DISTINCT r.project_id, r.kind, r.resource_type, r.resource_id,
                           c.event_time, c.seq
                      FROM _m_rows r
                      LEFT JOIN waybill.resource_current c
                        ON c.project_id = r.project_id AND c.kind = r.kind
                       AND c.resource_type = r.resource_type AND c.resource_id = r.resource_id
                     WHERE r.max_seq > r.seq) f
              JOIN LATERAL (
                    SELECT e.seq, e.event_type, e.event_time FROM waybill.usage_events e
                     WHERE e.project_id = f.project_id AND e.metering_kind = f.kind
                       AND e.resource_type = f.resource_type AND e.resource_id = f.resource_id
                       AND (f.from_time IS NULL OR (e.event_time, e.seq) >= (f.from_time, f.from_seq))
                       AND e.seq <= v_hi) e ON true) o
     WHERE o.seq > v_state.watermark AND o.event_time < o.prior_max
    ON CONFLICT ON CONSTRAINT metering_anomalies_pkey DO NOTHING;
    DELETE FROM waybill.metering_anomalies a
     USING _m_final w
     WHERE w.old AND a.project_id = w.project_id AND a.seq = w.seq
       AND a.anomaly <> 'out_of_order';
    INSERT INTO waybill.metering_anomalies (seq, anomaly, project_id, kind, resource_type,
                                            resource_id, event_type, event_time, detail)
    SELECT w.seq, a.anomaly, w.project_id, w.kind, w.resource_type, w.resource_id,
           w.event_type, w.event_time, a.detail
      FROM _m_final w
      JOIN (VALUES
            ('deployment.stopped'::waybill.event_type, 'stop_without_running',
             'stopped while not running; nothing to stop'),
            ('deployment.scaled', 'scale_without_running', 'scaled while not running; ignored'),
            ('volume.resized', 'resize_unknown_volume', 'resized a volume that does not exist; ignored'),
            ('volume.deleted', 'delete_unknown_volume', 'deleted a volume that does not exist'),
            ('domain.removed', 'remove_unattached_domain', 'removed a domain that is not attached')
           ) a(event_type, anomaly, detail) ON a.event_type = w.event_type
     WHERE NOT w.old AND NOT w.prev_active
    ON CONFLICT ON CONSTRAINT metering_anomalies_pkey DO NOTHING;
    -- The new current states: most resources have one already (updated in
    -- place), new ones are inserted; one join tells which. A resource has one
    -- last row, and MERGE refuses to change a row twice if it ever had two.
    -- A resource's row is in its project's shard: the join looks at this
    -- shard's rows only.
    MERGE INTO waybill.resource_current c
    USING (SELECT * FROM _m_final w WHERE w.is_last AND NOT w.old) w
       ON c.project_id = w.project_id AND c.kind = w.kind
      AND c.resource_type = w.resource_type AND c.resource_id = w.resource_id
      AND waybill.rollup_shard(c.project_id, v_shards) = p_shard
     WHEN MATCHED THEN UPDATE
          SET event_time = w.event_time, seq = w.seq, active = w.active, replicas = w.replicas,
              cpu_millicores = w.cpu_millicores, memory_mb = w.memory_mb, size_gb = w.size_gb,
              value = w.value
     WHEN NOT MATCHED THEN
          INSERT (project_id, kind, resource_type, resource_id, event_time, seq, active, replicas,
                  cpu_millicores, memory_mb, size_gb, value)
          VALUES (w.project_id, w.kind, w.resource_type, w.resource_id, w.event_time, w.seq,
                  w.active, w.replicas, w.cpu_millicores, w.memory_mb, w.size_gb, w.value);
    v_timings := v_timings || jsonb_build_object('write_states_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 5. What changes, per project and hour: each replayed event's change of
    -- value (minus its change in the old replay) summed by hour, as the change
    -- of level and that change times the seconds left in its hour (what it
    -- adds to the hour's GB-seconds); the point usage of the new events (each
    -- event lands once: the watermark moves in this transaction); and, for the
    -- hours this run closes, what earlier runs left open for them
    -- (open_usage). Each source is summed per project and hour on its own,
    -- then they are joined. Domains keep the instant: the most attached at
    -- once is not a sum. The hours this run closes end at v_to: p_until, or
    -- where an earlier run closed them, if later.
    -- A backfill's scan of the whole table for point usage is worth sharing
    -- with parallel workers, and its sums are worth a hash table: guessing
    -- that the shard filter keeps 0.5 % of the events, the planner would sort
    -- millions of them (4.3-5.5 s of a shard's backfill instead of 2.9 s).
    v_to := greatest(p_until, v_state.closed_until);
    PERFORM set_config('parallel_setup_cost', '100', true),
            set_config('parallel_tuple_cost', '0.001', true),
            set_config('enable_sort', 'off', true)
      WHERE v_backfill;
    CREATE TEMP TABLE _m_changes ON COMMIT DROP AS
    WITH points AS (
        SELECT e.project_id, waybill.utc_hour(e.event_time) AS hour,
               coalesce(sum(e.quantity) FILTER (WHERE e.event_type IN ('build.completed', 'build.failed')), 0)
                   AS build_seconds,
               coalesce(sum(e.quantity) FILTER (WHERE e.event_type = 'bandwidth.usage'), 0) AS bandwidth_gb,
               count(*) AS events
          FROM waybill.usage_events e
         WHERE e.seq > v_state.watermark AND e.seq <= v_hi
           AND e.event_type IN ('build.completed', 'build.failed', 'bandwidth.usage')
           AND waybill.rollup_shard(e.project_id, v_shards) = p_shard
         GROUP BY 1, 2
    ), weighted AS (
        SELECT c.project_id, c.hour,
               coalesce(sum(c.d) FILTER (WHERE c.kind = 'compute'), 0) AS compute_delta,
               coalesce(sum(c.d * c.seconds_left) FILTER (WHERE c.kind = 'compute'), 0)
                   AS compute_weighted,
               coalesce(sum(c.d) FILTER (WHERE c.kind = 'volume'), 0) AS storage_delta,
               coalesce(sum(c.d * c.seconds_left) FILTER (WHERE c.kind = 'volume'), 0)
                   AS storage_weighted
          FROM (SELECT w.project_id, w.kind, h.hour,
                       CASE WHEN w.old THEN -w.value_delta ELSE w.value_delta END AS d,
                       extract(epoch FROM h.hour + interval '1 hour' - w.event_time) AS seconds_left
                  FROM _m_final w
                 CROSS JOIN LATERAL (SELECT waybill.utc_hour(w.event_time) AS hour) h
                 WHERE w.value_delta <> 0 AND w.kind <> 'domain') c
         GROUP BY c.project_id, c.hour
    ), opened AS (
        SELECT o.* FROM waybill.open_usage o
         WHERE o.hour < v_to AND waybill.rollup_shard(o.project_id, v_shards) = p_shard
    )
    SELECT coalesce(w.project_id, p.project_id, o.project_id) AS project_id,
           coalesce(w.hour, p.hour, o.hour) AS hour,
           coalesce(w.compute_delta, 0) + coalesce(o.compute_delta, 0) AS compute_delta,
           coalesce(w.compute_weighted, 0) + coalesce(o.compute_weighted, 0) AS compute_weighted,
           coalesce(w.storage_delta, 0) + coalesce(o.storage_delta, 0) AS storage_delta,
           coalesce(w.storage_weighted, 0) + coalesce(o.storage_weighted, 0) AS storage_weighted,
           coalesce(p.build_seconds, 0) + coalesce(o.build_seconds, 0) AS build_seconds,
           coalesce(p.bandwidth_gb, 0) + coalesce(o.bandwidth_gb, 0) AS bandwidth_gb,
           coalesce(p.events, 0) AS point_events
      FROM weighted w
      FULL JOIN points p ON p.project_id = w.project_id AND p.hour = w.hour
      FULL JOIN opened o
        ON o.project_id = coalesce(w.project_id, p.project_id) AND o.hour = coalesce(w.hour, p.hour);
    PERFORM set_config('parallel_setup_cost', v_parallel_setup, true),
            set_config('parallel_tuple_cost', v_parallel_tuple, true),
            set_config('enable_sort', v_sort, true);
    ANALYZE _m_changes (hour);
    v_events := v_events + (SELECT coalesce(sum(c.point_events), 0) FROM _m_changes c);
    -- The hours this run closes are [v_from, v_to); the first run starts at
    -- the earliest event (point usage or state change).
    v_from := coalesce(v_state.closed_until, waybill.utc_hour(least(
        (SELECT min(f.event_time) FROM _m_final f), (SELECT min(c.hour) FROM _m_changes c), p_until)));
    v_timings := v_timings || jsonb_build_object('changes_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();
    CREATE TEMP TABLE _m_dsteps ON COMMIT DROP AS
    SELECT w.project_id, w.event_time AS at,
           sum(CASE WHEN w.old THEN -w.value_delta ELSE w.value_delta END)::integer AS delta
      FROM _m_final w
     WHERE w.value_delta <> 0 AND w.kind = 'domain'
     GROUP BY w.project_id, w.event_time
    HAVING sum(CASE WHEN w.old THEN -w.value_delta ELSE w.value_delta END) <> 0;
    INSERT INTO waybill.domain_steps AS s (project_id, at, delta)
    SELECT d.project_id, d.at, d.delta FROM _m_dsteps d
    ON CONFLICT ON CONSTRAINT domain_steps_pkey DO UPDATE SET delta = s.delta + excluded.delta;
    DELETE FROM waybill.domain_steps s
     USING _m_dsteps d WHERE s.project_id = d.project_id AND s.at = d.at AND s.delta = 0;

    -- 6. The windows of the cells. Per project, one window of hours [lo, v_to):
    -- the new hours [v_from, v_to) for every project with a level or a change
    -- there, and, before them, the closed hours from the first one this run
    -- changes. Over the window, hour by hour: the level at the hour's start is
    -- the sum of the changes before it, plus (new hours only) the level at
    -- v_from; the hour's GB-seconds are 3600 x that level plus its weighted
    -- changes. For closed hours the time-weighted and point sums are
    -- differences, added to the stored cell; domains are recomputed outright
    -- from domain_steps.
    CREATE TEMP TABLE _m_win ON COMMIT DROP AS
    WITH stored AS (  -- the shard's levels at v_from: a row per project that has one
        SELECT l.project_id,
               coalesce(sum(l.level) FILTER (WHERE l.kind = 'compute'), 0) AS compute,
               coalesce(sum(l.level) FILTER (WHERE l.kind = 'volume'), 0) AS storage,
               coalesce(sum(l.level) FILTER (WHERE l.kind = 'domain'), 0) AS domains
          FROM waybill.resource_levels l
         WHERE waybill.rollup_shard(l.project_id, v_shards) = p_shard
         GROUP BY l.project_id
    ), spans AS (
        SELECT x.project_id, min(x.hour) AS lo
          FROM (SELECT c.project_id, least(c.hour, v_from) AS hour FROM _m_changes c
                 WHERE c.hour < v_to
                UNION ALL
                SELECT d.project_id, least(waybill.utc_hour(d.at), v_from) FROM _m_dsteps d
                 WHERE d.at < v_to
                UNION ALL
                SELECT l.project_id, v_from FROM stored l WHERE v_to > v_from  -- a level is never 0
                UNION ALL
                SELECT s.project_id, v_from FROM waybill.domain_steps s
                 WHERE s.at >= v_from AND s.at < v_to
                   AND waybill.rollup_shard(s.project_id, v_shards) = p_shard) x
         GROUP BY x.project_id
    )
    -- The levels at v_from (stored, before this run) and, for domains, just
    -- before lo: the stored level, plus this run's steps before v_from, minus
    -- every step in [lo, v_from).
    SELECT w.project_id, w.lo, coalesce(l.compute, 0) AS compute, coalesce(l.storage, 0) AS storage,
           coalesce(l.domains, 0) + coalesce(rd.delta, 0) - coalesce(sd.delta, 0) AS domains
      FROM spans w
      LEFT JOIN stored l ON l.project_id = w.project_id
      LEFT JOIN (SELECT d.project_id, sum(d.delta) AS delta FROM _m_dsteps d
                  WHERE d.at < v_from GROUP BY d.project_id) rd ON rd.project_id = w.project_id
      LEFT JOIN LATERAL (SELECT sum(s.delta) AS delta FROM waybill.domain_steps s
                          WHERE w.lo < v_from AND s.project_id = w.project_id
                            AND s.at >= w.lo AND s.at < v_from) sd ON true;
    ANALYZE _m_win (lo);
    PERFORM set_config('default_statistics_target', v_stats_target, true);
    -- The earliest hour any window reaches: domain steps are read from there
    -- on (an index range), not from the start of their history.
    v_lo := (SELECT min(w.lo) FROM _m_win w);
    v_timings := v_timings || jsonb_build_object('cells_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 7. The levels at v_to: the level at v_from plus every change in the
    -- window (domains: the level before lo plus every step in the window); and
    -- what stays open: changes in hours from v_to on.
    WITH levels AS (
        SELECT b.project_id, k.kind, k.level
          FROM _m_win b
          LEFT JOIN (SELECT c.project_id, sum(c.compute_delta) AS cd, sum(c.storage_delta) AS sd
                       FROM _m_changes c WHERE c.hour < v_to GROUP BY c.project_id) c
            ON c.project_id = b.project_id
          LEFT JOIN (SELECT s.project_id, sum(s.delta) AS dd
                       FROM _m_win w
                       JOIN waybill.domain_steps s
                         ON s.project_id = w.project_id AND s.at >= w.lo AND s.at < v_to
                        AND s.at >= v_lo
                      GROUP BY s.project_id) d
            ON d.project_id = b.project_id
         CROSS JOIN LATERAL (VALUES ('compute', b.compute + coalesce(c.cd, 0)),
                                    ('volume', b.storage + coalesce(c.sd, 0)),
                                    ('domain', b.domains + coalesce(d.dd, 0))) k(kind, level)
    ), changed AS (  -- most levels stay as they were: write only the others
        SELECT n.project_id, n.kind, n.level, o.project_id IS NOT NULL AS stored
          FROM levels n
          LEFT JOIN waybill.resource_levels o ON o.project_id = n.project_id AND o.kind = n.kind
         WHERE n.level IS DISTINCT FROM coalesce(o.level, 0)
    ), removed AS (
        DELETE FROM waybill.resource_levels l USING changed c
         WHERE c.stored AND c.level = 0 AND l.project_id = c.project_id AND l.kind = c.kind
    )
    INSERT INTO waybill.resource_levels AS l (project_id, kind, level)
    SELECT c.project_id, c.kind, c.level FROM changed c WHERE c.level <> 0
    ON CONFLICT ON CONSTRAINT resource_levels_pkey DO UPDATE SET level = excluded.level;
    DELETE FROM waybill.open_usage o
     WHERE o.hour < v_to AND waybill.rollup_shard(o.project_id, v_shards) = p_shard;
    INSERT INTO waybill.open_usage AS o (project_id, hour, compute_delta, compute_weighted,
        storage_delta, storage_weighted, build_seconds, bandwidth_gb)
    SELECT c.project_id, c.hour, c.compute_delta, c.compute_weighted, c.storage_delta,
           c.storage_weighted, c.build_seconds, c.bandwidth_gb
      FROM _m_changes c WHERE c.hour >= v_to
    ON CONFLICT ON CONSTRAINT open_usage_pkey DO UPDATE
       SET compute_delta = o.compute_delta + excluded.compute_delta,
           compute_weighted = o.compute_weighted + excluded.compute_weighted,
           storage_delta = o.storage_delta + excluded.storage_delta,
           storage_weighted = o.storage_weighted + excluded.storage_weighted,
           build_seconds = o.build_seconds + excluded.build_seconds,
           bandwidth_gb = o.bandwidth_gb + excluded.bandwidth_gb;
    DELETE FROM waybill.open_usage o
     USING _m_changes c
     WHERE c.hour >= v_to AND o.project_id = c.project_id AND o.hour = c.hour
       AND (o.compute_delta, o.compute_weighted, o.storage_delta, o.storage_weighted,
            o.build_seconds, o.bandwidth_gb) = (0, 0, 0, 0, 0, 0);

    -- 8. Write the cells; note the days of those that changed for the daily
    -- rollup. A window's level changes only at its steps: hours with
    -- time-weighted changes or domain steps. Between two steps, before the
    -- first and after the last, every hour holds the level reached so far, so
    -- each window is cut into runs of hours with one value, and point usage is
    -- added hour by hour.
    -- Closed hours (< v_from) may hold rows: the stored cell plus the
    -- differences; a cell that became all zero goes, the others are written
    -- where a value changed. New hours (>= v_from) never hold a row (rows are
    -- only written below closed_until, which only grows): plain inserts.
    -- The planner cannot know how many hours a run spans (generate_series
    -- counts 1000 a call); left to itself it sorts both sides of the join with
    -- point usage rather than hash the smaller one.
    PERFORM set_config('enable_mergejoin', 'off', true);
    WITH domain_hours AS (
        -- per hour: the change of attached domains, the highest running change
        -- after any instant in it (all events at an instant together), and
        -- whether an instant is the hour's start (then the level before the
        -- hour does not hold for any time inside it)
        SELECT s.project_id, s.hour, sum(s.delta) AS dd, max(s.running) AS peak,
               bool_or(s.at = s.hour) AS at_start
          FROM (SELECT s.project_id, s.at, waybill.utc_hour(s.at) AS hour, s.delta,
                       sum(s.delta) OVER (PARTITION BY s.project_id, waybill.utc_hour(s.at)
                                          ORDER BY s.at) AS running
                  FROM _m_win w
                  JOIN waybill.domain_steps s
                    ON s.project_id = w.project_id AND s.at >= w.lo AND s.at < v_to
                   AND s.at >= v_lo) s
         GROUP BY s.project_id, s.hour
    ), steps AS (
        -- each step with the sums of the changes before it in its window
        SELECT s.*,
               sum(s.cd) OVER w - s.cd AS cd_before, sum(s.sd) OVER w - s.sd AS sd_before,
               sum(s.dd) OVER w - s.dd AS dd_before, lag(s.hour) OVER w IS NULL AS is_first,
               coalesce(lead(s.hour) OVER w, v_to) AS next_hour
          FROM (SELECT b.project_id, b.lo, b.compute, b.storage, b.domains,
                       coalesce(c.hour, d.hour) AS hour,
                       coalesce(c.compute_delta, 0) AS cd, coalesce(c.compute_weighted, 0) AS cw,
                       coalesce(c.storage_delta, 0) AS sd, coalesce(c.storage_weighted, 0) AS sw,
                       coalesce(d.dd, 0) AS dd,
                       CASE WHEN d.at_start THEN d.peak ELSE greatest(coalesce(d.peak, 0), 0) END
                           AS peak
                  FROM (SELECT c.* FROM _m_changes c
                         WHERE c.hour < v_to
                           AND (c.compute_delta, c.compute_weighted, c.storage_delta,
                                c.storage_weighted) <> (0, 0, 0, 0)) c
                  FULL JOIN domain_hours d ON d.project_id = c.project_id AND d.hour = c.hour
                  JOIN _m_win b ON b.project_id = coalesce(c.project_id, d.project_id)) s
        WINDOW w AS (PARTITION BY s.project_id ORDER BY s.hour ROWS UNBOUNDED PRECEDING)
    ), levels AS (
        -- runs [run_from, run_to) at one level (the sums of the changes
        -- before them, l_*) and the weighted changes and domain peak of a
        -- step's own hour
        SELECT s.project_id, s.compute, s.storage, s.domains, r.*
          FROM steps s
         CROSS JOIN LATERAL (
                SELECT s.lo AS run_from, s.hour AS run_to, 0 AS l_c, 0 AS l_s, 0 AS l_d,
                       0 AS w_c, 0 AS w_s, 0 AS peak
                 WHERE s.is_first AND s.lo < s.hour
                UNION ALL
                SELECT s.hour, s.hour + interval '1 hour', s.cd_before, s.sd_before, s.dd_before,
                       s.cw, s.sw, s.peak
                UNION ALL
                SELECT s.hour + interval '1 hour', s.next_hour, s.cd_before + s.cd,
                       s.sd_before + s.sd, s.dd_before + s.dd, 0, 0, 0
                 WHERE s.hour + interval '1 hour' < s.next_hour) r
        UNION ALL  -- a window without a step holds its level at v_from throughout
        SELECT b.project_id, b.compute, b.storage, b.domains, b.lo, v_to, 0, 0, 0, 0, 0, 0
          FROM _m_win b
         WHERE NOT EXISTS (SELECT 1 FROM steps s WHERE s.project_id = b.project_id)
    ), runs AS (
        -- what an hour of the run holds, new (the level at v_from included) or
        -- closed (a difference)
        SELECT l.project_id, l.run_from, l.run_to,
               3600 * (l.compute + l.l_c) + l.w_c AS compute_new, 3600 * l.l_c + l.w_c AS compute_closed,
               3600 * (l.storage + l.l_s) + l.w_s AS storage_new, 3600 * l.l_s + l.w_s AS storage_closed,
               (l.domains + l.l_d + l.peak)::integer AS custom_domains
          FROM levels l
    ), closed AS (
        -- Closed cells: the stored cell, looked up by its key (a run usually
        -- has none or a few, and a join the planner costs from
        -- generate_series' guess would hash all of hourly_usage, its whole
        -- history, instead; OFFSET 0 keeps the lookup a lookup), plus the
        -- differences.
        SELECT r.project_id, g.hour, h.project_id IS NOT NULL AS stored,
               coalesce(h.compute_gb_seconds, 0) + r.compute_closed AS compute_gb_seconds,
               coalesce(h.storage_gb_seconds, 0) + r.storage_closed AS storage_gb_seconds,
               coalesce(h.build_seconds, 0) + coalesce(p.build_seconds, 0) AS build_seconds,
               coalesce(h.bandwidth_gb, 0) + coalesce(p.bandwidth_gb, 0) AS bandwidth_gb,
               r.custom_domains
          FROM runs r
         CROSS JOIN LATERAL generate_series(r.run_from, least(r.run_to, v_from) - interval '1 hour',
                                            interval '1 hour') g(hour)
          LEFT JOIN _m_changes p ON p.project_id = r.project_id AND p.hour = g.hour
          LEFT JOIN LATERAL (
                SELECT h.* FROM waybill.hourly_usage h
                 WHERE h.project_id = r.project_id AND h.hour = g.hour OFFSET 0) h ON true
         WHERE r.run_from < v_from
    ), removed AS (
        DELETE FROM waybill.hourly_usage h
         USING closed r
         WHERE r.stored AND h.project_id = r.project_id AND h.hour = r.hour
           AND r.compute_gb_seconds = 0 AND r.storage_gb_seconds = 0 AND r.build_seconds = 0
           AND r.bandwidth_gb = 0 AND r.custom_domains = 0
        RETURNING h.project_id, h.hour
    ), written AS (
        INSERT INTO waybill.hourly_usage AS h (project_id, hour, compute_gb_seconds,
            storage_gb_seconds, build_seconds, bandwidth_gb, custom_domains, computed_at)
        SELECT r.project_id, r.hour, r.compute_gb_seconds, r.storage_gb_seconds, r.build_seconds,
               r.bandwidth_gb, r.custom_domains, now()
          FROM closed r
         WHERE NOT (r.compute_gb_seconds = 0 AND r.storage_gb_seconds = 0
                    AND r.build_seconds = 0 AND r.bandwidth_gb = 0 AND r.custom_domains = 0)
        ON CONFLICT ON CONSTRAINT hourly_usage_pkey DO UPDATE
           SET compute_gb_seconds = excluded.compute_gb_seconds,
               storage_gb_seconds = excluded.storage_gb_seconds,
               build_seconds = excluded.build_seconds, bandwidth_gb = excluded.bandwidth_gb,
               custom_domains = excluded.custom_domains, computed_at = excluded.computed_at
         WHERE (h.compute_gb_seconds, h.storage_gb_seconds, h.build_seconds, h.bandwidth_gb,
                h.custom_domains)
               IS DISTINCT FROM (excluded.compute_gb_seconds, excluded.storage_gb_seconds,
                excluded.build_seconds, excluded.bandwidth_gb, excluded.custom_domains)
        RETURNING h.project_id, h.hour
    ), added AS (
        -- New cells: the level (from v_from) plus point usage, inserted; their
        -- days are noted below from the runs, not from a row per cell.
        INSERT INTO waybill.hourly_usage (project_id, hour, compute_gb_seconds,
            storage_gb_seconds, build_seconds, bandwidth_gb, custom_domains, computed_at)
        SELECT c.* FROM (
            SELECT r.project_id, g.hour, r.compute_new AS compute_gb_seconds,
                   r.storage_new AS storage_gb_seconds,
                   coalesce(p.build_seconds, 0) AS build_seconds,
                   coalesce(p.bandwidth_gb, 0) AS bandwidth_gb, r.custom_domains, now()
              FROM runs r
             CROSS JOIN LATERAL generate_series(greatest(r.run_from, v_from),
                                                r.run_to - interval '1 hour', interval '1 hour') g(hour)
              LEFT JOIN _m_changes p ON p.project_id = r.project_id AND p.hour = g.hour
             WHERE r.run_to > v_from) c
         WHERE NOT (c.compute_gb_seconds = 0 AND c.storage_gb_seconds = 0
                    AND c.build_seconds = 0 AND c.bandwidth_gb = 0 AND c.custom_domains = 0)
    ), changed AS (
        SELECT * FROM removed UNION ALL SELECT * FROM written
    )
    -- The days of the cells written: the changed closed cells, and, for each
    -- project with a new cell that is not all zero (a run with a level, or an
    -- hour with point usage), every day of the new hours [v_from, v_to): a
    -- row per project and day, not per cell or run. A day of such a project
    -- whose new cells are all zero is noted too; the daily rollup finds no
    -- cells there and writes nothing. A repeat (v_from's day) is left to
    -- ON CONFLICT. The projects are grouped, not a UNION: its hash table
    -- would be sized from the planner's guess at the runs (millions of rows
    -- in a backfill); a GROUP BY of a column it knows nothing about guesses
    -- 200.
    INSERT INTO waybill.rollup_dirty_days (project_id, day)
    SELECT c.project_id, (c.hour AT TIME ZONE 'UTC')::date FROM changed c
    UNION ALL
    SELECT n.project_id, d.day::date
      FROM (SELECT x.project_id
              FROM (SELECT r.project_id FROM runs r
                     WHERE r.run_to > v_from
                       AND (r.compute_new, r.storage_new, r.custom_domains) <> (0, 0, 0)
                    UNION ALL
                    SELECT p.project_id FROM _m_changes p
                     WHERE p.hour >= v_from AND p.hour < v_to
                       AND (p.build_seconds, p.bandwidth_gb) <> (0, 0)) x
             GROUP BY x.project_id) n
     CROSS JOIN generate_series(date_trunc('day', v_from AT TIME ZONE 'UTC'),
                                (v_to - interval '1 hour') AT TIME ZONE 'UTC',
                                interval '1 day') d(day)
    ON CONFLICT ON CONSTRAINT rollup_dirty_days_pkey DO NOTHING;
    GET DIAGNOSTICS v_cells = ROW_COUNT;
    PERFORM set_config('enable_mergejoin', v_mergejoin, true);
    v_timings := v_timings || jsonb_build_object('write_hourly_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    UPDATE waybill.rollup_shards s
       SET watermark = v_hi, closed_until = v_to, hourly_run_at = now()
     WHERE s.shard = p_shard;

    RETURN jsonb_build_object('shard', p_shard, 'events', v_events, 'resources', v_resources,
                              'dirty_days', v_cells, 'watermark', v_hi,
                              'closed_until', v_to, 'waited_for_writers', v_waited > 0,
                              'timings', v_timings);
END
$$;
