-- waybill.rollup_hourly: bring hourly_usage up to date with every committed event.
--
-- Inputs: p_until, an hour boundary (UTC): hours before it are closed and get
-- computed, later hours wait for a later run. p_max_wait: how long to wait for
-- transactions still writing events below the safe upper bound.
-- Reads: usage_events with seq in (watermark, safe upper bound]; for a resource
-- whose new events come before its latest applied one (late), its own events
-- from its last reset on (usage_events_resource_idx); resource_current,
-- resource_levels, open_usage and domain_steps (docs/metering.md).
-- Output: jsonb summary {events, resources, dirty_days, watermark, closed_until,
-- waited_for_writers, timings (milliseconds per step)}.
-- Side effects: resource_current, resource_levels, open_usage, domain_steps,
-- metering_anomalies, hourly_usage, rollup_dirty_days and rollup_state, all in
-- the caller's transaction, so a run that fails changes nothing. Concurrent
-- runs serialize on an advisory lock.
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
    PERFORM set_config('work_mem', '1GB', true)
     WHERE pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('1GB');
    -- Row estimates for the temporary tables are rough; JIT compiling for a
    -- plan that then touches a few thousand rows costs more than it saves.
    PERFORM set_config('jit', 'off', true);
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

    DROP TABLE IF EXISTS pg_temp._m_new, pg_temp._m_points, pg_temp._m_res, pg_temp._m_late,
        pg_temp._m_rows, pg_temp._m_changes, pg_temp._m_dsteps, pg_temp._m_win,
        pg_temp._m_cells, pg_temp._m_result;

    -- 1. The new events: time-weighted ones as they are, point usage summed per
    -- project and hour (each lands once: the watermark moves in this transaction).
    CREATE TEMP TABLE _m_new ON COMMIT DROP AS
    SELECT e.seq, e.project_id, waybill.metering_kind(e.event_type) AS kind, e.resource_type,
           e.resource_id, e.event_time, e.event_type, e.replicas, e.cpu_millicores, e.memory_mb,
           e.size_gb
      FROM waybill.usage_events e
     WHERE e.seq > v_state.watermark AND e.seq <= v_hi
       AND waybill.metering_kind(e.event_type) IS NOT NULL;
    GET DIAGNOSTICS v_events = ROW_COUNT;
    ANALYZE _m_new;
    CREATE TEMP TABLE _m_points ON COMMIT DROP AS
    SELECT e.project_id, date_trunc('hour', e.event_time, 'UTC') AS hour,
           coalesce(sum(e.quantity) FILTER (WHERE e.event_type IN ('build.completed', 'build.failed')), 0)
               AS build_seconds,
           coalesce(sum(e.quantity) FILTER (WHERE e.event_type = 'bandwidth.usage'), 0) AS bandwidth_gb,
           count(*) AS events
      FROM waybill.usage_events e
     WHERE e.seq > v_state.watermark AND e.seq <= v_hi
       AND e.event_type IN ('build.completed', 'build.failed', 'bandwidth.usage')
     GROUP BY 1, 2;
    v_events := v_events + (SELECT coalesce(sum(p.events), 0) FROM _m_points p);

    -- The hours this run closes: [v_from, v_to). The first run starts at the
    -- earliest event.
    v_from := coalesce(v_state.closed_until, date_trunc('hour', least(
        (SELECT min(n.event_time) FROM _m_new n), (SELECT min(p.hour) FROM _m_points p), p_until),
        'UTC'));
    v_to := greatest(p_until, v_from);
    v_timings := v_timings || jsonb_build_object('read_events_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 2. Touched resources. A resource is late when its earliest new event t0
    -- comes before its latest applied event (new seqs are higher, so a tie is
    -- in order). In order, its current state is the seed; late, it is replayed
    -- from usage_events, from its last applied reset at or before t0 (after a
    -- reset the state no longer depends on what came before), or from its
    -- first event.
    -- rn numbers the touched resources: the replay sorts by it, not by the
    -- four columns of the resource's key.
    CREATE TEMP TABLE _m_res ON COMMIT DROP AS
    SELECT (row_number() OVER ())::integer AS rn, f.project_id, f.kind, f.resource_type,
           f.resource_id, f.t0,
           c.event_time AS seed_time, c.seq AS seed_seq, c.active AS seed_active,
           c.replicas AS seed_replicas, c.cpu_millicores AS seed_cpu, c.memory_mb AS seed_memory,
           c.size_gb AS seed_size, coalesce(f.t0 < c.event_time, false) AS late
      FROM (SELECT n.project_id, n.kind, n.resource_type, n.resource_id, min(n.event_time) AS t0
              FROM _m_new n GROUP BY 1, 2, 3, 4) f
      LEFT JOIN waybill.resource_current c
        ON c.project_id = f.project_id AND c.kind = f.kind AND c.resource_type = f.resource_type
       AND c.resource_id = f.resource_id;
    GET DIAGNOSTICS v_resources = ROW_COUNT;
    ANALYZE _m_res;
    CREATE TEMP TABLE _m_late ON COMMIT DROP AS
    SELECT r.rn, r.project_id, r.kind, r.resource_type, r.resource_id, a.event_time AS anchor_time,
           a.seq AS anchor_seq
      FROM _m_res r
      LEFT JOIN LATERAL (
            SELECT e.event_time, e.seq FROM waybill.usage_events e
             WHERE e.project_id = r.project_id AND e.resource_type = r.resource_type
               AND e.resource_id = r.resource_id
               AND e.event_type IN ('deployment.started', 'compute.snapshot', 'volume.created',
                                    'domain.added', 'deployment.stopped', 'volume.deleted',
                                    'domain.removed')
               AND waybill.metering_kind(e.event_type) = r.kind
               AND e.event_time <= r.t0 AND e.seq <= v_state.watermark
             ORDER BY e.event_time DESC, e.seq DESC LIMIT 1) a ON true
     WHERE r.late;

    -- 3. Replay: per resource, its state after each event in (event_time, seq)
    -- order. Late resources are replayed twice, with the old events alone and
    -- with all of them (`old` marks the first); the difference is what changes.
    -- A "reset" sets the whole state (a seed or an anchor is one); a modifier
    -- (scaled, resized) changes the fields it carries. A field's value is its
    -- last non-null value (nth_value at the position it was last set), never
    -- older than the last "on" reset, since an "on" carries every field. One
    -- sort, by (old, rn, event_time, seq), serves every window.
    CREATE TEMP TABLE _m_rows ON COMMIT DROP AS
    WITH input AS (
        SELECT false AS old, r.rn, r.project_id, r.kind, r.resource_type, r.resource_id,
               r.seed_time AS event_time, r.seed_seq AS seq, NULL::waybill.event_type AS event_type,
               true AS is_seed, CASE WHEN r.seed_active THEN 'on' ELSE 'off' END AS reset,
               r.seed_replicas AS f_r, r.seed_cpu AS f_c, r.seed_memory AS f_m, r.seed_size AS f_s
          FROM _m_res r WHERE r.seed_time IS NOT NULL AND NOT r.late
        UNION ALL
        SELECT false, r.rn, n.project_id, n.kind, n.resource_type, n.resource_id, n.event_time,
               n.seq, n.event_type, false, waybill.metering_reset(n.event_type),
               n.replicas, n.cpu_millicores, n.memory_mb, n.size_gb
          FROM _m_new n
          JOIN _m_res r ON r.project_id = n.project_id AND r.kind = n.kind
                       AND r.resource_type = n.resource_type AND r.resource_id = n.resource_id
         WHERE NOT r.late
        UNION ALL
        SELECT v.old, l.rn, l.project_id, l.kind, l.resource_type, l.resource_id, e.event_time, e.seq,
               e.event_type, (e.event_time, e.seq) IS NOT DISTINCT FROM (l.anchor_time, l.anchor_seq),
               waybill.metering_reset(e.event_type),
               e.replicas, e.cpu_millicores, e.memory_mb, e.size_gb
          FROM _m_late l
          JOIN LATERAL (
                SELECT * FROM waybill.usage_events e
                 WHERE e.project_id = l.project_id AND e.resource_type = l.resource_type
                   AND e.resource_id = l.resource_id
                   AND e.event_type IN ('deployment.started', 'deployment.scaled',
                                        'deployment.stopped', 'compute.snapshot',
                                        'volume.created', 'volume.resized', 'volume.deleted',
                                        'domain.added', 'domain.removed')
                   AND waybill.metering_kind(e.event_type) = l.kind
                   AND (l.anchor_time IS NULL OR (e.event_time, e.seq) >= (l.anchor_time, l.anchor_seq))
                   AND e.seq <= v_hi) e ON true
         CROSS JOIN (VALUES (false), (true)) v(old)
         WHERE NOT v.old OR e.seq <= v_state.watermark
    ), numbered AS (
        SELECT i.*, (row_number() OVER w)::integer AS ord
          FROM input i
        WINDOW w AS (PARTITION BY i.old, i.rn ORDER BY i.event_time, i.seq)
    ), located AS (
        -- where each field was last set: one sort serves every window below
        SELECT i.*,
               max(CASE WHEN i.reset IS NOT NULL THEN i.ord END) OVER w AS p_reset,
               max(CASE WHEN i.f_r IS NOT NULL THEN i.ord END) OVER w AS p_r,
               max(CASE WHEN i.f_c IS NOT NULL THEN i.ord END) OVER w AS p_c,
               max(CASE WHEN i.f_m IS NOT NULL THEN i.ord END) OVER w AS p_m,
               max(CASE WHEN i.f_s IS NOT NULL THEN i.ord END) OVER w AS p_s
          FROM numbered i
        WINDOW w AS (PARTITION BY i.old, i.rn ORDER BY i.event_time, i.seq)
    ), carried AS (
        SELECT c.*,
               coalesce(nth_value(c.reset, c.p_reset) OVER w = 'on', false) AS active,
               nth_value(c.f_r, c.p_r) OVER w AS s_r, nth_value(c.f_c, c.p_c) OVER w AS s_c,
               nth_value(c.f_m, c.p_m) OVER w AS s_m, nth_value(c.f_s, c.p_s) OVER w AS s_s
          FROM located c
        WINDOW w AS (PARTITION BY c.old, c.rn ORDER BY c.event_time, c.seq)
    ), valued AS (
        SELECT k.old, k.rn, k.project_id, k.kind, k.resource_type, k.resource_id, k.event_time, k.seq,
               k.event_type, k.is_seed, k.active,
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
           coalesce(lag(v.active) OVER w, false) AS prev_active,
           lead(v.seq) OVER w IS NULL AS is_last,
           -- seq order differs from time order somewhere in this partition
           v.seq < lag(v.seq) OVER w AS overtaken
      FROM valued v
    WINDOW w AS (PARTITION BY v.old, v.rn ORDER BY v.event_time, v.seq);
    v_timings := v_timings || jsonb_build_object('replay_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 4. State and anomalies. out_of_order depends on seq order alone, so it is
    -- decided once, when the event arrives, and only where seq order and time
    -- order disagree. The other anomalies are re-derived for every replayed
    -- event (not for seeds or anchors: their state is the one they had).
    INSERT INTO waybill.metering_anomalies (seq, anomaly, project_id, kind, resource_type,
                                            resource_id, event_type, event_time, detail)
    SELECT o.seq, 'out_of_order', o.project_id, o.kind, o.resource_type, o.resource_id,
           o.event_type, o.event_time,
           format('event time %s is before %s, already received for this resource',
                  o.event_time, o.prior_max)
      FROM (SELECT w.*, max(w.event_time) OVER (PARTITION BY w.rn ORDER BY w.seq
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prior_max
              FROM _m_rows w
             WHERE NOT w.old AND w.rn IN (SELECT x.rn FROM _m_rows x WHERE x.overtaken AND NOT x.old)) o
     WHERE o.seq > v_state.watermark AND o.event_time < o.prior_max
    ON CONFLICT ON CONSTRAINT metering_anomalies_pkey DO NOTHING;
    DELETE FROM waybill.metering_anomalies a
     USING _m_rows w
     WHERE w.old AND NOT w.is_seed AND a.project_id = w.project_id AND a.seq = w.seq
       AND a.anomaly <> 'out_of_order';
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
     WHERE NOT w.old AND NOT w.is_seed AND NOT w.prev_active
    ON CONFLICT ON CONSTRAINT metering_anomalies_pkey DO NOTHING;
    INSERT INTO waybill.resource_current AS c (project_id, kind, resource_type, resource_id,
        event_time, seq, active, replicas, cpu_millicores, memory_mb, size_gb, value)
    SELECT w.project_id, w.kind, w.resource_type, w.resource_id, w.event_time, w.seq, w.active,
           w.replicas, w.cpu_millicores, w.memory_mb, w.size_gb, w.value
      FROM _m_rows w WHERE w.is_last AND NOT w.old
    ON CONFLICT ON CONSTRAINT resource_current_pkey DO UPDATE
       SET event_time = excluded.event_time, seq = excluded.seq, active = excluded.active,
           replicas = excluded.replicas, cpu_millicores = excluded.cpu_millicores,
           memory_mb = excluded.memory_mb, size_gb = excluded.size_gb, value = excluded.value;
    v_timings := v_timings || jsonb_build_object('write_states_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 5. What the new events change: each replayed event's change of value
    -- (minus its change in the old replay), per project and hour: the change of
    -- level, and that change times the seconds left in its hour, which is what
    -- it adds to the hour's GB-seconds. Point usage joins them. Domains keep
    -- the instant: the most attached at once is not a sum.
    CREATE TEMP TABLE _m_changes ON COMMIT DROP AS
    SELECT x.project_id, x.hour, sum(x.compute_delta) AS compute_delta,
           sum(x.compute_weighted) AS compute_weighted, sum(x.storage_delta) AS storage_delta,
           sum(x.storage_weighted) AS storage_weighted, sum(x.build_seconds) AS build_seconds,
           sum(x.bandwidth_gb) AS bandwidth_gb
      FROM (SELECT c.project_id, c.hour,
                   coalesce(sum(c.d) FILTER (WHERE c.kind = 'compute'), 0) AS compute_delta,
                   coalesce(sum(c.d * c.seconds_left) FILTER (WHERE c.kind = 'compute'), 0)
                       AS compute_weighted,
                   coalesce(sum(c.d) FILTER (WHERE c.kind = 'volume'), 0) AS storage_delta,
                   coalesce(sum(c.d * c.seconds_left) FILTER (WHERE c.kind = 'volume'), 0)
                       AS storage_weighted,
                   0 AS build_seconds, 0 AS bandwidth_gb
              FROM (SELECT w.project_id, w.kind, h.hour,
                           CASE WHEN w.old THEN -w.value_delta ELSE w.value_delta END AS d,
                           extract(epoch FROM h.hour + interval '1 hour' - w.event_time) AS seconds_left
                      FROM _m_rows w
                     CROSS JOIN LATERAL (SELECT date_trunc('hour', w.event_time, 'UTC') AS hour) h
                     WHERE NOT w.is_seed AND w.value_delta <> 0 AND w.kind <> 'domain') c
             GROUP BY c.project_id, c.hour
            UNION ALL
            SELECT p.project_id, p.hour, 0, 0, 0, 0, p.build_seconds, p.bandwidth_gb
              FROM _m_points p) x
     GROUP BY x.project_id, x.hour;
    CREATE TEMP TABLE _m_dsteps ON COMMIT DROP AS
    SELECT w.project_id, w.event_time AS at,
           sum(CASE WHEN w.old THEN -w.value_delta ELSE w.value_delta END)::integer AS delta
      FROM _m_rows w
     WHERE NOT w.is_seed AND w.value_delta <> 0 AND w.kind = 'domain'
     GROUP BY w.project_id, w.event_time
    HAVING sum(CASE WHEN w.old THEN -w.value_delta ELSE w.value_delta END) <> 0;
    INSERT INTO waybill.domain_steps AS s (project_id, at, delta)
    SELECT d.project_id, d.at, d.delta FROM _m_dsteps d
    ON CONFLICT ON CONSTRAINT domain_steps_pkey DO UPDATE SET delta = s.delta + excluded.delta;
    DELETE FROM waybill.domain_steps s
     USING _m_dsteps d WHERE s.project_id = d.project_id AND s.at = d.at AND s.delta = 0;

    -- 6. The cells. Per project, one window of hours [lo, v_to): the new hours
    -- [v_from, v_to) for every project with a level or a change there, and,
    -- before them, the closed hours from the first one this run changes. Over
    -- the window, hour by hour: the level at the hour's start is the sum of
    -- the changes before it, plus (new hours only) the level at v_from; the
    -- hour's GB-seconds are 3600 x that level plus its weighted changes. For
    -- closed hours the time-weighted and point sums are differences, added to
    -- the stored cell; domains are recomputed outright from domain_steps.
    CREATE TEMP TABLE _m_win ON COMMIT DROP AS
    WITH spans AS (
        SELECT x.project_id, min(x.hour) AS lo
          FROM (SELECT c.project_id, least(c.hour, v_from) AS hour FROM _m_changes c
                 WHERE c.hour < v_to
                UNION ALL
                SELECT d.project_id, least(date_trunc('hour', d.at, 'UTC'), v_from) FROM _m_dsteps d
                 WHERE d.at < v_to
                UNION ALL
                SELECT l.project_id, v_from FROM waybill.resource_levels l
                 WHERE v_to > v_from AND l.level <> 0
                UNION ALL
                SELECT o.project_id, v_from FROM waybill.open_usage o WHERE o.hour < v_to
                UNION ALL
                SELECT s.project_id, v_from FROM waybill.domain_steps s
                 WHERE s.at >= v_from AND s.at < v_to) x
         GROUP BY x.project_id
    )
    -- The levels at v_from (stored, before this run) and, for domains, just
    -- before lo: the stored level, plus this run's steps before v_from, minus
    -- every step in [lo, v_from).
    SELECT w.project_id, w.lo, coalesce(lc.level, 0) AS compute, coalesce(lv.level, 0) AS storage,
           coalesce(ld.level, 0) + coalesce(rd.delta, 0) - coalesce(sd.delta, 0) AS domains
      FROM spans w
      LEFT JOIN waybill.resource_levels lc ON lc.project_id = w.project_id AND lc.kind = 'compute'
      LEFT JOIN waybill.resource_levels lv ON lv.project_id = w.project_id AND lv.kind = 'volume'
      LEFT JOIN waybill.resource_levels ld ON ld.project_id = w.project_id AND ld.kind = 'domain'
      LEFT JOIN (SELECT d.project_id, sum(d.delta) AS delta FROM _m_dsteps d
                  WHERE d.at < v_from GROUP BY d.project_id) rd ON rd.project_id = w.project_id
      LEFT JOIN LATERAL (SELECT sum(s.delta) AS delta FROM waybill.domain_steps s
                          WHERE w.lo < v_from AND s.project_id = w.project_id
                            AND s.at >= w.lo AND s.at < v_from) sd ON true;
    ANALYZE _m_win;

    CREATE TEMP TABLE _m_cells ON COMMIT DROP AS
    WITH inputs AS (
        SELECT c.project_id, c.hour, c.compute_delta, c.compute_weighted, c.storage_delta,
               c.storage_weighted, c.build_seconds, c.bandwidth_gb
          FROM _m_changes c WHERE c.hour < v_to
        UNION ALL
        SELECT o.project_id, o.hour, o.compute_delta, o.compute_weighted, o.storage_delta,
               o.storage_weighted, o.build_seconds, o.bandwidth_gb
          FROM waybill.open_usage o WHERE o.hour < v_to
    ), per_hour AS (
        SELECT i.project_id, i.hour, sum(i.compute_delta) AS cd, sum(i.compute_weighted) AS cw,
               sum(i.storage_delta) AS sd, sum(i.storage_weighted) AS sw,
               sum(i.build_seconds) AS build_seconds, sum(i.bandwidth_gb) AS bandwidth_gb
          FROM inputs i GROUP BY i.project_id, i.hour
    ), domain_hours AS (
        -- per hour: the change of attached domains, the highest running change
        -- after any instant in it (all events at an instant together), and
        -- whether an instant is the hour's start (then the level before the
        -- hour does not hold for any time inside it)
        SELECT s.project_id, s.hour, sum(s.delta) AS dd, max(s.running) AS peak,
               bool_or(s.at = s.hour) AS at_start
          FROM (SELECT s.project_id, s.at, date_trunc('hour', s.at, 'UTC') AS hour, s.delta,
                       sum(s.delta) OVER (PARTITION BY s.project_id, date_trunc('hour', s.at, 'UTC')
                                          ORDER BY s.at) AS running
                  FROM _m_win w
                  JOIN waybill.domain_steps s
                    ON s.project_id = w.project_id AND s.at >= w.lo AND s.at < v_to) s
         GROUP BY s.project_id, s.hour
    ), grid AS (
        SELECT b.project_id, g.hour, b.compute, b.storage, b.domains,
               coalesce(p.cd, 0) AS cd, coalesce(p.cw, 0) AS cw, coalesce(p.sd, 0) AS sd,
               coalesce(p.sw, 0) AS sw, coalesce(p.build_seconds, 0) AS build_seconds,
               coalesce(p.bandwidth_gb, 0) AS bandwidth_gb,
               coalesce(d.dd, 0) AS dd,
               CASE WHEN d.at_start THEN d.peak ELSE greatest(coalesce(d.peak, 0), 0) END AS peak
          FROM _m_win b
         CROSS JOIN LATERAL generate_series(b.lo, v_to - interval '1 hour', interval '1 hour') g(hour)
          LEFT JOIN per_hour p ON p.project_id = b.project_id AND p.hour = g.hour
          LEFT JOIN domain_hours d ON d.project_id = b.project_id AND d.hour = g.hour
    )
    SELECT r.project_id, r.hour, r.hour < v_from AS closed,
           3600 * (CASE WHEN r.hour < v_from THEN 0 ELSE r.compute END + r.cd_before) + r.cw
               AS compute_gb_seconds,
           3600 * (CASE WHEN r.hour < v_from THEN 0 ELSE r.storage END + r.sd_before) + r.sw
               AS storage_gb_seconds,
           r.build_seconds, r.bandwidth_gb,
           (r.domains + r.dd_before + r.peak)::integer AS custom_domains,
           -- the levels at v_to, on each project's last row
           CASE WHEN r.hour = v_to - interval '1 hour' THEN r.compute + r.cd_before + r.cd END
               AS compute_level,
           CASE WHEN r.hour = v_to - interval '1 hour' THEN r.storage + r.sd_before + r.sd END
               AS storage_level,
           CASE WHEN r.hour = v_to - interval '1 hour' THEN r.domains + r.dd_before + r.dd END
               AS domain_level
      FROM (SELECT g.*,
                   sum(g.cd) OVER w - g.cd AS cd_before, sum(g.sd) OVER w - g.sd AS sd_before,
                   sum(g.dd) OVER w - g.dd AS dd_before
              FROM grid g
            WINDOW w AS (PARTITION BY g.project_id ORDER BY g.hour ROWS UNBOUNDED PRECEDING)) r;

    -- Closed hours: the stored cell plus the differences; new hours as computed.
    CREATE TEMP TABLE _m_result ON COMMIT DROP AS
    SELECT c.project_id, c.hour,
           coalesce(h.compute_gb_seconds, 0) + c.compute_gb_seconds AS compute_gb_seconds,
           coalesce(h.storage_gb_seconds, 0) + c.storage_gb_seconds AS storage_gb_seconds,
           coalesce(h.build_seconds, 0) + c.build_seconds AS build_seconds,
           coalesce(h.bandwidth_gb, 0) + c.bandwidth_gb AS bandwidth_gb,
           c.custom_domains
      FROM _m_cells c
      LEFT JOIN waybill.hourly_usage h ON h.project_id = c.project_id AND h.hour = c.hour
     WHERE c.closed
    UNION ALL
    SELECT c.project_id, c.hour, c.compute_gb_seconds, c.storage_gb_seconds, c.build_seconds,
           c.bandwidth_gb, c.custom_domains
      FROM _m_cells c WHERE NOT c.closed;
    v_timings := v_timings || jsonb_build_object('cells_ms', round(extract(epoch FROM clock_timestamp() - v_mark) * 1000, 1));
    v_mark := clock_timestamp();

    -- 7. The levels at v_to, and what stays open: changes in hours from v_to on.
    INSERT INTO waybill.resource_levels AS l (project_id, kind, level)
    SELECT c.project_id, k.kind, k.level
      FROM _m_cells c
     CROSS JOIN LATERAL (VALUES ('compute', c.compute_level), ('volume', c.storage_level),
                                ('domain', c.domain_level)) k(kind, level)
     WHERE c.hour = v_to - interval '1 hour'
    ON CONFLICT ON CONSTRAINT resource_levels_pkey DO UPDATE SET level = excluded.level
     WHERE l.level <> excluded.level;
    DELETE FROM waybill.resource_levels l WHERE l.level = 0;
    DELETE FROM waybill.open_usage o WHERE o.hour < v_to;
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

    -- 8. Write the cells that changed; note their days for the daily rollup.
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
