-- waybill.rollup_hourly: bring hourly_usage up to date with every committed event.
--
-- Inputs: p_until, an hour boundary (UTC): hours before it are closed and get
-- computed, later hours wait for a later run. p_max_wait: how long to wait for
-- transactions still writing events below the safe upper bound.
-- Reads: usage_events with seq in (watermark, safe upper bound], plus the state
-- rows of the resources those events touch, resource_levels and the state rows
-- at or after the start of each window it computes (docs/metering.md).
-- Output: jsonb summary {events, resources, dirty_days, watermark, closed_until,
-- waited_for_writers, timings (milliseconds per step)}.
-- Side effects: resource_states, resource_levels, metering_anomalies,
-- point_usage, hourly_usage, rollup_dirty_days and rollup_state, all in the
-- caller's transaction, so a run that fails changes nothing. Into an empty
-- resource_states (first run, recomputation) it drops and re-creates that
-- table's indexes. Concurrent runs serialize on an advisory lock.
-- Errors: 22023 when p_until is not an hour boundary; 25001 unless READ COMMITTED
-- (each statement must see the events committed while the run waited for them);
-- 55P03 when writers are still open after p_max_wait (nothing changed; retry).
CREATE OR REPLACE FUNCTION waybill.rollup_hourly(p_until timestamptz,
                                                 p_max_wait interval DEFAULT '5 minutes')
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_state      waybill.rollup_state;
    v_hi         bigint;
    v_vxids      text[];
    v_waited     integer := 0;
    v_deadline   timestamptz;
    v_from       timestamptz;
    v_to         timestamptz;
    v_events     bigint;
    v_resources  bigint;
    v_cells      bigint;
    v_bulk       boolean;
    v_mark       timestamptz := clock_timestamp();
    v_timings    jsonb := '{}';
BEGIN
    IF p_until IS NULL OR p_until <> date_trunc('hour', p_until, 'UTC') THEN
        RAISE EXCEPTION 'rollup_hourly: p_until must be an hour boundary, got %', p_until
            USING ERRCODE = '22023';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'rollup_hourly must run in READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = '25001';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('waybill.rollups'));
    SELECT * INTO STRICT v_state FROM waybill.rollup_state FOR UPDATE;
    -- A backfill sorts and stages millions of rows; keep them in memory when we
    -- can. temp_buffers only takes before the session's first temporary table.
    PERFORM set_config('work_mem', '256MB', true)
     WHERE pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('256MB');
    BEGIN
        PERFORM set_config('temp_buffers', '512MB', true)
         WHERE pg_size_bytes(current_setting('temp_buffers')) < pg_size_bytes('512MB');
    EXCEPTION WHEN invalid_parameter_value OR cant_change_runtime_param THEN
        NULL;  -- this session already used temporary tables: keep its setting
    END;

    -- The safe upper bound. An inserter takes RowExclusiveLock on usage_events
    -- before it draws a seq, so every transaction that drew a seq <= v_hi either
    -- has ended or is among the lock holders listed next; once those are gone,
    -- every seq <= v_hi is committed (visible to our next statements) or never
    -- will be. Nothing below v_hi can appear later, so the watermark never skips.
    v_hi := coalesce(pg_sequence_last_value('waybill.usage_events_seq_seq'::regclass), 0);
    SELECT array_agg(DISTINCT l.virtualtransaction) INTO v_vxids
      FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.relation = 'waybill.usage_events'::regclass
       AND l.mode = 'RowExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid();
    v_deadline := clock_timestamp() + p_max_wait;
    WHILE v_vxids IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_locks l
         WHERE l.locktype = 'relation' AND l.relation = 'waybill.usage_events'::regclass
           AND l.virtualtransaction = ANY (v_vxids))
    LOOP
        IF clock_timestamp() > v_deadline THEN
            RAISE EXCEPTION 'rollup_hourly: transactions writing usage_events still open after %',
                p_max_wait USING ERRCODE = '55P03',
                HINT = 'a long transaction holds rows below the watermark; the next run retries';
        END IF;
        PERFORM pg_sleep(0.005);
        v_waited := v_waited + 1;
    END LOOP;
    IF v_hi < v_state.watermark THEN
        v_hi := v_state.watermark;  -- a restored sequence must never move us backwards
    END IF;
    v_timings := v_timings || jsonb_build_object('wait_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    DROP TABLE IF EXISTS pg_temp._m_new, pg_temp._m_res, pg_temp._m_old, pg_temp._m_rows,
        pg_temp._m_dirty, pg_temp._m_cells, pg_temp._m_tw, pg_temp._m_result;

    -- 1. The new events.
    CREATE TEMP TABLE _m_new ON COMMIT DROP AS
    SELECT e.seq, e.project_id, e.event_type, e.resource_type, e.resource_id, e.event_time,
           e.replicas, e.cpu_millicores, e.memory_mb, e.size_gb, e.quantity,
           CASE
               WHEN e.event_type IN ('deployment.started', 'deployment.scaled',
                                     'deployment.stopped', 'compute.snapshot') THEN 'compute'
               WHEN e.event_type IN ('volume.created', 'volume.resized', 'volume.deleted')
                   THEN 'volume'
               WHEN e.event_type IN ('domain.added', 'domain.removed') THEN 'domain'
           END AS kind
      FROM waybill.usage_events e
     WHERE e.seq > v_state.watermark AND e.seq <= v_hi;
    GET DIAGNOSTICS v_events = ROW_COUNT;
    ANALYZE _m_new;
    v_timings := v_timings || jsonb_build_object('read_events_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 2. Point usage, by delta: each event lands once because the watermark moves
    -- in this same transaction.
    INSERT INTO waybill.point_usage AS p (project_id, hour, build_seconds, bandwidth_gb)
    SELECT n.project_id, date_trunc('hour', n.event_time, 'UTC'),
           coalesce(sum(n.quantity) FILTER (WHERE n.event_type IN ('build.completed', 'build.failed')), 0),
           coalesce(sum(n.quantity) FILTER (WHERE n.event_type = 'bandwidth.usage'), 0)
      FROM _m_new n
     WHERE n.event_type IN ('build.completed', 'build.failed', 'bandwidth.usage')
     GROUP BY 1, 2
    ON CONFLICT ON CONSTRAINT point_usage_pkey DO UPDATE
       SET build_seconds = p.build_seconds + excluded.build_seconds,
           bandwidth_gb = p.bandwidth_gb + excluded.bandwidth_gb;
    v_timings := v_timings || jsonb_build_object('point_usage_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 3. Touched resources: the earliest new event (t0, s0) of each, and the
    -- state row just before it (the seed the replay starts from).
    CREATE TEMP TABLE _m_res ON COMMIT DROP AS
    SELECT f.project_id, f.kind, f.resource_type, f.resource_id, f.t0, f.s0,
           seed.event_time AS seed_time, seed.seq AS seed_seq, seed.active AS seed_active,
           seed.replicas AS seed_replicas, seed.cpu_millicores AS seed_cpu,
           seed.memory_mb AS seed_memory, seed.size_gb AS seed_size, seed.value AS seed_value,
           seed.valid_to AS seed_valid_to, last.event_time AS last_time, last.seq AS last_seq
      FROM (SELECT DISTINCT ON (n.project_id, n.kind, n.resource_type, n.resource_id)
                   n.project_id, n.kind, n.resource_type, n.resource_id,
                   n.event_time AS t0, n.seq AS s0
              FROM _m_new n WHERE n.kind IS NOT NULL
             ORDER BY n.project_id, n.kind, n.resource_type, n.resource_id, n.event_time, n.seq
           ) f
      -- The resource's latest row, which is the seed when every new event
      -- comes after it (the usual case: one index probe per resource).
      LEFT JOIN LATERAL (
            SELECT s.* FROM waybill.resource_states s
             WHERE s.project_id = f.project_id AND s.kind = f.kind
               AND s.resource_type = f.resource_type AND s.resource_id = f.resource_id
             ORDER BY s.event_time DESC, s.seq DESC LIMIT 1) last ON true
      LEFT JOIN LATERAL (
            SELECT last.* WHERE (last.event_time, last.seq) < (f.t0, f.s0)
            UNION ALL
            (SELECT s.* FROM waybill.resource_states s
              WHERE (last.event_time, last.seq) >= (f.t0, f.s0)
                AND s.project_id = f.project_id AND s.kind = f.kind
                AND s.resource_type = f.resource_type AND s.resource_id = f.resource_id
                AND (s.event_time, s.seq) < (f.t0, f.s0)
              ORDER BY s.event_time DESC, s.seq DESC LIMIT 1)) seed ON true;
    GET DIAGNOSTICS v_resources = ROW_COUNT;
    ANALYZE _m_res;

    -- 4. The rows to replay: the stored rows from (t0, s0) on.
    CREATE TEMP TABLE _m_old ON COMMIT DROP AS
    SELECT s.* FROM _m_res r
      JOIN LATERAL (
            SELECT * FROM waybill.resource_states s
             WHERE s.project_id = r.project_id AND s.kind = r.kind
               AND s.resource_type = r.resource_type AND s.resource_id = r.resource_id
               AND (s.event_time, s.seq) >= (r.t0, r.s0)) s ON true
     WHERE (r.last_time, r.last_seq) >= (r.t0, r.s0);  -- else nothing stored is that late

    -- out_of_order: decided by seq alone, so it is found once, when the event arrives.
    INSERT INTO waybill.metering_anomalies (seq, anomaly, project_id, kind, resource_type,
                                            resource_id, event_type, event_time, detail)
    SELECT o.seq, 'out_of_order', o.project_id, o.kind, o.resource_type, o.resource_id,
           o.event_type, o.event_time,
           format('event time %s is before %s, already received for this resource',
                  o.event_time, o.prior_max)
      FROM (SELECT n.*, greatest(r.last_time, max(n.event_time) OVER (
                       PARTITION BY n.project_id, n.kind COLLATE "C", n.resource_type COLLATE "C",
                       n.resource_id COLLATE "C" ORDER BY n.seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS prior_max
              FROM _m_new n JOIN _m_res r USING (project_id, kind, resource_type, resource_id)) o
     WHERE o.event_time < o.prior_max
    ON CONFLICT ON CONSTRAINT metering_anomalies_pkey DO NOTHING;

    -- 5. Replay: seed + old rows + new events, state by window functions (one pass
    -- over every touched resource at once). A "reset" sets the whole state (start,
    -- snapshot, create, add: on; stop, delete, remove: off; the seed: its state);
    -- a modifier (scaled, resized) changes the fields it carries. A field's value
    -- is its last non-null value (nth_value at the position it was last set),
    -- which is never older than the last "on" reset, since an "on" carries every
    -- field. The partitions compare bytes (COLLATE "C"): equal keys are equal in
    -- any deterministic collation, and the sort is much cheaper.
    CREATE TEMP TABLE _m_rows ON COMMIT DROP AS
    WITH input AS (
        SELECT r.project_id, r.kind, r.resource_type, r.resource_id, r.seed_time AS event_time,
               r.seed_seq AS seq, NULL::waybill.event_type AS event_type, true AS is_seed,
               CASE WHEN r.seed_active THEN 'on' ELSE 'off' END AS reset,
               r.seed_replicas AS f_r, r.seed_cpu AS f_c, r.seed_memory AS f_m, r.seed_size AS f_s,
               NULL::numeric AS in_r, NULL::numeric AS in_c, NULL::numeric AS in_m, NULL::numeric AS in_s
          FROM _m_res r WHERE r.seed_time IS NOT NULL
        UNION ALL
        SELECT x.project_id, x.kind, x.resource_type, x.resource_id, x.event_time, x.seq,
               x.event_type, false,
               CASE WHEN x.event_type IN ('deployment.started', 'compute.snapshot',
                                          'volume.created', 'domain.added') THEN 'on'
                    WHEN x.event_type IN ('deployment.stopped', 'volume.deleted',
                                          'domain.removed') THEN 'off' END,
               x.in_r, x.in_c, x.in_m, x.in_s, x.in_r, x.in_c, x.in_m, x.in_s
          FROM (SELECT o.project_id, o.kind, o.resource_type, o.resource_id, o.event_time, o.seq,
                       o.event_type, o.in_replicas AS in_r, o.in_cpu AS in_c,
                       o.in_memory_mb AS in_m, o.in_size_gb AS in_s
                  FROM _m_old o
                UNION ALL
                SELECT n.project_id, n.kind, n.resource_type, n.resource_id, n.event_time, n.seq,
                       n.event_type, n.replicas, n.cpu_millicores, n.memory_mb, n.size_gb
                  FROM _m_new n WHERE n.kind IS NOT NULL) x
    ), numbered AS (
        SELECT i.*, (row_number() OVER w)::integer AS ord
          FROM input i
        WINDOW w AS (PARTITION BY i.project_id, i.kind COLLATE "C", i.resource_type COLLATE "C",
                     i.resource_id COLLATE "C" ORDER BY i.event_time, i.seq)
    ), located AS (
        -- where each field was last set: one sort serves every window below
        SELECT i.*,
               max(CASE WHEN i.reset IS NOT NULL THEN i.ord END) OVER w AS p_reset,
               max(CASE WHEN i.f_r IS NOT NULL THEN i.ord END) OVER w AS p_r,
               max(CASE WHEN i.f_c IS NOT NULL THEN i.ord END) OVER w AS p_c,
               max(CASE WHEN i.f_m IS NOT NULL THEN i.ord END) OVER w AS p_m,
               max(CASE WHEN i.f_s IS NOT NULL THEN i.ord END) OVER w AS p_s
          FROM numbered i
        WINDOW w AS (PARTITION BY i.project_id, i.kind COLLATE "C", i.resource_type COLLATE "C",
                     i.resource_id COLLATE "C" ORDER BY i.event_time, i.seq)
    ), carried AS (
        SELECT c.*,
               coalesce(nth_value(c.reset, c.p_reset) OVER w = 'on', false) AS active,
               nth_value(c.f_r, c.p_r) OVER w AS s_r, nth_value(c.f_c, c.p_c) OVER w AS s_c,
               nth_value(c.f_m, c.p_m) OVER w AS s_m, nth_value(c.f_s, c.p_s) OVER w AS s_s
          FROM located c
        WINDOW w AS (PARTITION BY c.project_id, c.kind COLLATE "C", c.resource_type COLLATE "C",
                     c.resource_id COLLATE "C" ORDER BY c.event_time, c.seq)
    )
    , valued AS (
    SELECT k.project_id, k.kind, k.resource_type, k.resource_id, k.event_time, k.seq,
           k.event_type, k.is_seed, k.in_r, k.in_c, k.in_m, k.in_s, k.active,
           CASE WHEN k.active AND k.kind = 'compute' THEN k.s_r END AS replicas,
           CASE WHEN k.active AND k.kind = 'compute' THEN k.s_c END AS cpu_millicores,
           CASE WHEN k.active AND k.kind = 'compute' THEN k.s_m END AS memory_mb,
           CASE WHEN k.active AND k.kind = 'volume' THEN k.s_s END AS size_gb,
           CASE WHEN NOT k.active THEN 0
                WHEN k.kind = 'compute' THEN
                    -- 1/1024 = 0.0009765625 exactly: multiplying keeps the value exact
                    greatest(coalesce(k.s_m, 0) * 0.0009765625, coalesce(k.s_c, 0) * 0.001)
                    * coalesce(k.s_r, 0)
                WHEN k.kind = 'volume' THEN coalesce(k.s_s, 0)
                ELSE 1 END AS value
      FROM carried k
    )
    SELECT v.*,
           v.value - coalesce(lag(v.value) OVER w, 0) AS value_delta,
           coalesce(lead(v.event_time) OVER w, 'infinity') AS valid_to,
           coalesce(lag(v.active) OVER w, false) AS prev_active
      FROM valued v
    WINDOW w AS (PARTITION BY v.project_id, v.kind COLLATE "C", v.resource_type COLLATE "C",
                 v.resource_id COLLATE "C" ORDER BY v.event_time, v.seq);
    ANALYZE _m_rows;
    v_timings := v_timings || jsonb_build_object('replay_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 6. Which stretches of time changed: segments (start, end, value) present in
    -- only one of the old and the new timeline, per resource, as a hull.
    CREATE TEMP TABLE _m_dirty ON COMMIT DROP AS
    WITH old_seg AS (
        SELECT o.project_id, o.kind, o.resource_type, o.resource_id, o.event_time, o.valid_to, o.value
          FROM _m_old o
        UNION ALL
        SELECT r.project_id, r.kind, r.resource_type, r.resource_id, r.seed_time, r.seed_valid_to,
               r.seed_value
          FROM _m_res r WHERE r.seed_time IS NOT NULL
    ), new_seg AS (
        SELECT w.project_id, w.kind, w.resource_type, w.resource_id, w.event_time, w.valid_to, w.value
          FROM _m_rows w
    ), changed AS (
        (SELECT * FROM old_seg EXCEPT ALL SELECT * FROM new_seg)
        UNION ALL
        (SELECT * FROM new_seg EXCEPT ALL SELECT * FROM old_seg)
    )
    -- Before t0 old and new timelines are the same state (the seed's), so a
    -- change never starts earlier. The first run has no closed hour to re-open.
    SELECT c.project_id, greatest(min(c.event_time), min(r.t0)) AS lo, max(c.valid_to) AS hi
      FROM changed c
      JOIN _m_res r USING (project_id, kind, resource_type, resource_id)
     WHERE c.valid_to > c.event_time AND v_state.closed_until IS NOT NULL
     GROUP BY c.project_id, c.kind, c.resource_type, c.resource_id;

    -- 7. Write the replayed state and re-derive its anomalies. Into an empty
    -- resource_states (the first run, a recomputation) the rows are written
    -- without indexes, which are then built in one sort each: the same
    -- definitions as migrations 0100 and 0102.
    v_bulk := NOT EXISTS (SELECT 1 FROM waybill.resource_states);
    IF v_bulk THEN
        PERFORM set_config('maintenance_work_mem', '256MB', true)
         WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes('256MB');
        DROP INDEX waybill.resource_states_event_time_idx;
        DROP INDEX waybill.resource_states_project_event_time_idx;
        ALTER TABLE waybill.resource_states DROP CONSTRAINT resource_states_pkey;
    END IF;
    DELETE FROM waybill.metering_anomalies a
     USING _m_old o WHERE a.seq = o.seq AND a.anomaly <> 'out_of_order';
    DELETE FROM waybill.resource_states s
     USING _m_old o
     WHERE s.project_id = o.project_id AND s.kind = o.kind AND s.resource_type = o.resource_type
       AND s.resource_id = o.resource_id AND s.event_time = o.event_time AND s.seq = o.seq;
    UPDATE waybill.resource_states s SET valid_to = w.valid_to
      FROM _m_rows w
     WHERE w.is_seed AND s.project_id = w.project_id AND s.kind = w.kind
       AND s.resource_type = w.resource_type AND s.resource_id = w.resource_id
       AND s.event_time = w.event_time AND s.seq = w.seq AND s.valid_to <> w.valid_to;
    INSERT INTO waybill.resource_states (project_id, kind, resource_type, resource_id, event_time,
        seq, event_type, in_replicas, in_cpu, in_memory_mb, in_size_gb, active, replicas,
        cpu_millicores, memory_mb, size_gb, value, value_delta, valid_to)
    SELECT w.project_id, w.kind, w.resource_type, w.resource_id, w.event_time, w.seq,
           w.event_type, w.in_r, w.in_c, w.in_m, w.in_s, w.active, w.replicas, w.cpu_millicores,
           w.memory_mb, w.size_gb, w.value, w.value_delta, w.valid_to
      FROM _m_rows w WHERE NOT w.is_seed;
    IF v_bulk THEN
        ALTER TABLE waybill.resource_states ADD CONSTRAINT resource_states_pkey
            PRIMARY KEY (project_id, kind, resource_type, resource_id, event_time, seq);
        CREATE INDEX resource_states_event_time_idx ON waybill.resource_states (event_time);
        CREATE INDEX resource_states_project_event_time_idx
            ON waybill.resource_states (project_id, event_time);
        ANALYZE waybill.resource_states;
    END IF;
    -- resource_levels = the sum of value_delta per project and kind, by delta:
    -- the replayed rows replace the old ones (a seed keeps its value_delta).
    INSERT INTO waybill.resource_levels AS l (project_id, kind, level)
    SELECT x.project_id, x.kind, sum(x.d)
      FROM (SELECT w.project_id, w.kind, w.value_delta AS d FROM _m_rows w WHERE NOT w.is_seed
            UNION ALL
            SELECT o.project_id, o.kind, -o.value_delta FROM _m_old o) x
     GROUP BY x.project_id, x.kind
    ON CONFLICT ON CONSTRAINT resource_levels_pkey DO UPDATE
       SET level = l.level + excluded.level
     WHERE excluded.level <> 0;
    INSERT INTO waybill.metering_anomalies (seq, anomaly, project_id, kind, resource_type,
                                            resource_id, event_type, event_time, detail)
    SELECT w.seq, a.anomaly, w.project_id, w.kind, w.resource_type, w.resource_id,
           w.event_type, w.event_time, a.detail
      FROM _m_rows w
      JOIN (VALUES
            ('deployment.stopped'::waybill.event_type, 'stop_without_running',
             'stopped while not running; nothing to stop'),
            ('deployment.scaled', 'scale_without_running', 'scaled while not running; ignored'),
            ('volume.resized', 'resize_unknown_volume', 'resized a volume that does not exist; ignored'),
            ('volume.deleted', 'delete_unknown_volume', 'deleted a volume that does not exist'),
            ('domain.removed', 'remove_unattached_domain', 'removed a domain that is not attached')
           ) a(event_type, anomaly, detail) ON a.event_type = w.event_type
     WHERE NOT w.is_seed AND NOT w.prev_active
    ON CONFLICT ON CONSTRAINT metering_anomalies_pkey DO NOTHING;
    v_timings := v_timings || jsonb_build_object('write_states_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 8. The cells to compute: changed closed hours (dirty), and every new hour.
    v_from := coalesce(v_state.closed_until, date_trunc('hour', least(
        (SELECT min(s.event_time) FROM waybill.resource_states s),
        (SELECT min(p.hour) FROM waybill.point_usage p), p_until), 'UTC'));
    v_to := greatest(p_until, v_from);

    CREATE TEMP TABLE _m_cells ON COMMIT DROP AS
    SELECT DISTINCT x.project_id, x.hour FROM (
        SELECT d.project_id, h.hour
          FROM _m_dirty d,
               generate_series(date_trunc('hour', d.lo, 'UTC'),
                               least(d.hi, v_from) - interval '1 microsecond',
                               interval '1 hour') h(hour)
        UNION ALL
        SELECT n.project_id, date_trunc('hour', n.event_time, 'UTC')
          FROM _m_new n
         WHERE n.event_type IN ('build.completed', 'build.failed', 'bandwidth.usage')
           AND n.event_time < v_from
    ) x;
    ANALYZE _m_cells;

    -- 9. The cells, from scratch. Per project and kind, the resources' values
    -- add up to one step function: its level at a window's start (the segments
    -- overlapping it) plus the change at each event (value_delta). Each level
    -- segment is cut at hour boundaries: GB-seconds = level x seconds (exact
    -- numeric); custom_domains = the highest level in the hour, i.e. the most
    -- attached at once after all events at an instant (same-instant changes are
    -- summed before the level is taken). Windows: [v_from, v_to) for all
    -- projects (new hours) and, per project, the hull of its dirty cells.
    CREATE TEMP TABLE _m_tw ON COMMIT DROP AS
    WITH windows AS (
        SELECT c.project_id, min(c.hour) AS lo, max(c.hour) + interval '1 hour' AS hi
          FROM _m_cells c GROUP BY c.project_id
    ), deltas AS (
        -- New hours. The level at v_from: resource_levels (every resource's
        -- current value) minus the changes at or after v_from. The first run
        -- starts before every event, at level 0.
        SELECT l.project_id, l.kind, v_from AS lo, v_to AS hi, v_from AS t, l.level AS delta
          FROM waybill.resource_levels l
         WHERE v_to > v_from AND v_state.closed_until IS NOT NULL AND l.level <> 0
        UNION ALL
        SELECT s.project_id, s.kind, v_from, v_to, v_from, -s.value_delta
          FROM waybill.resource_states s
         WHERE v_to > v_from AND v_state.closed_until IS NOT NULL AND s.event_time >= v_from
           AND s.value_delta <> 0
        UNION ALL
        SELECT s.project_id, s.kind, v_from, v_to, s.event_time, s.value_delta
          FROM waybill.resource_states s
         WHERE v_to > v_from AND s.event_time >= v_from AND s.event_time < v_to
           AND s.value_delta <> 0
        UNION ALL
        -- Dirty windows, the same way within one project.
        SELECT l.project_id, l.kind, w.lo, w.hi, w.lo, l.level
          FROM windows w
          JOIN waybill.resource_levels l ON l.project_id = w.project_id AND l.level <> 0
        UNION ALL
        SELECT s.project_id, s.kind, w.lo, w.hi, w.lo, -s.value_delta
          FROM windows w
          JOIN waybill.resource_states s
            ON s.project_id = w.project_id AND s.event_time >= w.lo AND s.value_delta <> 0
        UNION ALL
        SELECT s.project_id, s.kind, w.lo, w.hi, s.event_time, s.value_delta
          FROM windows w
          JOIN waybill.resource_states s
            ON s.project_id = w.project_id AND s.event_time >= w.lo AND s.event_time < w.hi
           AND s.value_delta <> 0
    ), points AS (
        -- one step function per project, the three kinds side by side
        SELECT d.project_id, d.lo, d.hi, d.t,
               coalesce(sum(d.delta) FILTER (WHERE d.kind = 'compute'), 0) AS d_compute,
               coalesce(sum(d.delta) FILTER (WHERE d.kind = 'volume'), 0) AS d_storage,
               coalesce(sum(d.delta) FILTER (WHERE d.kind = 'domain'), 0) AS d_domains
          FROM deltas d GROUP BY d.project_id, d.lo, d.hi, d.t
    ), levels AS (
        SELECT p.project_id, p.t, lead(p.t, 1, p.hi) OVER w AS t_end,
               sum(p.d_compute) OVER w AS compute, sum(p.d_storage) OVER w AS storage,
               sum(p.d_domains) OVER w AS domains
          FROM points p
        WINDOW w AS (PARTITION BY p.project_id, p.lo ORDER BY p.t)
    ), pieces AS (
        SELECT l.project_id, h.hour, l.compute, l.storage, l.domains,
               extract(epoch FROM least(l.t_end, h.hour + interval '1 hour')
                                  - greatest(l.t, h.hour)) AS seconds
          FROM levels l
         CROSS JOIN LATERAL generate_series(date_trunc('hour', l.t, 'UTC'),
                                            l.t_end - interval '1 microsecond',
                                            interval '1 hour') h(hour)
         WHERE (l.compute > 0 OR l.storage > 0 OR l.domains > 0) AND l.t_end > l.t
    )
    SELECT p.project_id, p.hour,
           sum(p.compute * p.seconds) AS compute_gb_seconds,
           sum(p.storage * p.seconds) AS storage_gb_seconds,
           max(p.domains)::integer AS custom_domains
      FROM pieces p
     WHERE p.hour >= v_from
        OR EXISTS (SELECT 1 FROM _m_cells c WHERE c.project_id = p.project_id AND c.hour = p.hour)
     GROUP BY p.project_id, p.hour;
    ANALYZE _m_tw;

    CREATE TEMP TABLE _m_result ON COMMIT DROP AS
    SELECT k.project_id, k.hour,
           coalesce(t.compute_gb_seconds, 0) AS compute_gb_seconds,
           coalesce(t.storage_gb_seconds, 0) AS storage_gb_seconds,
           coalesce(pu.build_seconds, 0) AS build_seconds,
           coalesce(pu.bandwidth_gb, 0) AS bandwidth_gb,
           coalesce(t.custom_domains, 0) AS custom_domains
      FROM (SELECT c.project_id, c.hour FROM _m_cells c
            UNION
            SELECT t.project_id, t.hour FROM _m_tw t
            UNION
            SELECT p.project_id, p.hour FROM waybill.point_usage p
             WHERE p.hour >= v_from AND p.hour < v_to) k
      LEFT JOIN _m_tw t ON t.project_id = k.project_id AND t.hour = k.hour
      -- point usage of those cells: the new hours by hour, dirty cells by key
      -- (never a scan of all of point_usage)
      LEFT JOIN (SELECT p.project_id, p.hour, p.build_seconds, p.bandwidth_gb
                   FROM waybill.point_usage p WHERE p.hour >= v_from AND p.hour < v_to
                 UNION ALL
                 SELECT p.project_id, p.hour, p.build_seconds, p.bandwidth_gb
                   FROM _m_cells c
                   JOIN waybill.point_usage p ON p.project_id = c.project_id AND p.hour = c.hour
                  WHERE c.hour < v_from) pu ON pu.project_id = k.project_id AND pu.hour = k.hour;
    v_timings := v_timings || jsonb_build_object('cells_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 10. Write the cells that changed; note their days for the daily rollup.
    -- Closed hours (< v_from) may hold rows: delete the ones now zero, upsert
    -- the rest where a value changed. New hours (>= v_from) never hold a row
    -- (rows are only written below closed_until, which only grows), so they are
    -- plain inserts.
    WITH removed AS (
        DELETE FROM waybill.hourly_usage h
         USING _m_result r
         WHERE r.hour < v_from AND h.project_id = r.project_id AND h.hour = r.hour
           AND r.compute_gb_seconds = 0 AND r.storage_gb_seconds = 0 AND r.build_seconds = 0
           AND r.bandwidth_gb = 0 AND r.custom_domains = 0
        RETURNING h.project_id, h.hour
    ), written AS (
        INSERT INTO waybill.hourly_usage AS h (project_id, hour, compute_gb_seconds,
            storage_gb_seconds, build_seconds, bandwidth_gb, custom_domains, computed_at)
        SELECT r.project_id, r.hour, r.compute_gb_seconds, r.storage_gb_seconds, r.build_seconds,
               r.bandwidth_gb, r.custom_domains, now()
          FROM _m_result r
         WHERE r.hour < v_from
           AND NOT (r.compute_gb_seconds = 0 AND r.storage_gb_seconds = 0
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
        INSERT INTO waybill.hourly_usage (project_id, hour, compute_gb_seconds,
            storage_gb_seconds, build_seconds, bandwidth_gb, custom_domains, computed_at)
        SELECT r.project_id, r.hour, r.compute_gb_seconds, r.storage_gb_seconds, r.build_seconds,
               r.bandwidth_gb, r.custom_domains, now()
          FROM _m_result r
         WHERE r.hour >= v_from
           AND NOT (r.compute_gb_seconds = 0 AND r.storage_gb_seconds = 0
                    AND r.build_seconds = 0 AND r.bandwidth_gb = 0 AND r.custom_domains = 0)
        RETURNING project_id, hour
    ), changed AS (
        SELECT * FROM removed UNION ALL SELECT * FROM written UNION ALL SELECT * FROM added
    )
    INSERT INTO waybill.rollup_dirty_days (project_id, day)
    SELECT DISTINCT c.project_id, (c.hour AT TIME ZONE 'UTC')::date FROM changed c
    ON CONFLICT ON CONSTRAINT rollup_dirty_days_pkey DO NOTHING;
    GET DIAGNOSTICS v_cells = ROW_COUNT;
    v_timings := v_timings || jsonb_build_object('write_hourly_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    UPDATE waybill.rollup_state
       SET watermark = v_hi, closed_until = v_to, hourly_run_at = now();

    RETURN jsonb_build_object('events', v_events, 'resources', v_resources,
                              'dirty_days', v_cells, 'watermark', v_hi,
                              'closed_until', v_to, 'waited_for_writers', v_waited > 0,
                              'timings', v_timings);
END
$$;
