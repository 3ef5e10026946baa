-- waybill.bill_period: compute (or recompute) the draft billing records of one month.
--
-- Inputs: p_period_start (first day of a UTC month), p_as_of (the instant of the
-- run, recorded as computed_at; must be at or after the month's end).
-- Output: the number of draft records written.
-- Side effects: for every project with a plan or usage in the month whose record
-- is not finalized: upserts its draft record (one per project and period, under
-- billing_records_period_key) and replaces its lines: per subscription segment a
-- base fee line and one line per metric (waybill.price_segment), then one
-- adjustment line per earlier finalized month whose usage changed after it was
-- finalized (recomputed charges minus what was already billed for that month;
-- may be negative). Drafts that no longer have anything to bill are deleted.
-- Finalized records are never touched. Runs for one period are serialized by an
-- advisory lock, so concurrent runs write the same result once.
-- Errors: WB422 when the period is not a month start or has not ended at p_as_of.
CREATE OR REPLACE FUNCTION waybill.bill_period(p_period_start date, p_as_of timestamptz)
RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    v_from           timestamptz := p_period_start::timestamp AT TIME ZONE 'UTC';
    v_to             timestamptz := (p_period_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    v_period_seconds numeric;
    v_currency       text;
    v_usage_as_of    timestamptz;
    v_q              date;
    v_q_to           timestamptz;
    v_q_closed       timestamptz;
    v_candidates     uuid[];
    v_count          integer;
BEGIN
    IF p_period_start IS NULL OR extract(day FROM p_period_start) <> 1 THEN
        RAISE EXCEPTION 'a billing period starts on the first day of a month (got %)', p_period_start
            USING ERRCODE = 'WB422';
    END IF;
    IF p_as_of < v_to THEN
        RAISE EXCEPTION 'period % has not ended at %', to_char(p_period_start, 'YYYY-MM'), p_as_of
            USING ERRCODE = 'WB422';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('waybill.billing'), p_period_start - date '2000-01-01');
    v_period_seconds := extract(epoch FROM v_to - v_from);
    SELECT currency INTO v_currency FROM waybill.billing_settings;
    v_usage_as_of := least(v_to, waybill.billing_usage_as_of());

    DROP TABLE IF EXISTS pg_temp.billing_lines;
    CREATE TEMP TABLE billing_lines (
        project_id uuid, seq bigint, kind waybill.billing_line_kind, metric text,
        description text, plan_id text, segment_from timestamptz, segment_to timestamptz,
        quantity numeric, included numeric, billable numeric, unit text, unit_price numeric,
        amount_cents bigint, adjustment_period date
    ) ON COMMIT DROP;

    INSERT INTO billing_lines
    SELECT u.project_id,
           row_number() OVER (PARTITION BY u.project_id ORDER BY u.segment_from, l.line_no),
           l.kind, l.metric, l.description, u.plan_id, u.segment_from, u.segment_to,
           l.quantity, l.included, l.billable, l.unit, l.unit_price, l.amount_cents, NULL
      FROM waybill.billing_segment_usage(p_period_start, v_to, NULL) u
     CROSS JOIN LATERAL waybill.price_segment(
               u.plan_id, extract(epoch FROM u.segment_to - u.segment_from), v_period_seconds,
               u.compute_gb_seconds, u.storage_gb_seconds, u.build_seconds, u.bandwidth_gb,
               u.custom_domains) l
     WHERE NOT EXISTS (SELECT 1 FROM waybill.billing_records r
                        WHERE r.project_id = u.project_id AND r.period_start = p_period_start
                          AND r.status <> 'draft');

    -- Late usage for finalized months (events are accepted up to EVENT_MAX_AGE,
    -- 35 days by default, so two months back covers it). A changed day has a
    -- daily_usage row recomputed after the record's finalization (daily rows are
    -- only rewritten when their sums change), or is still in rollup_dirty_days.
    FOR v_q IN SELECT d::date FROM generate_series(p_period_start - interval '2 months',
                                                   p_period_start - interval '1 month',
                                                   interval '1 month') d
    LOOP
        SELECT min(r.finalized_at) INTO v_q_closed
          FROM waybill.billing_records r WHERE r.period_start = v_q AND r.status <> 'draft';
        CONTINUE WHEN v_q_closed IS NULL;  -- not finalized for anyone yet: nothing is late
        v_q_to := (v_q + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        SELECT array_agg(DISTINCT c.project_id) INTO v_candidates
          FROM (SELECT u.project_id, u.computed_at
                  FROM waybill.daily_usage u
                 WHERE u.day >= v_q AND u.day < (v_q + interval '1 month')::date
                UNION ALL  -- changed hours not yet in daily_usage
                SELECT d.project_id, 'infinity'::timestamptz
                  FROM waybill.rollup_dirty_days d
                 WHERE d.day >= v_q AND d.day < (v_q + interval '1 month')::date) c
          LEFT JOIN waybill.billing_records r ON r.project_id = c.project_id AND r.period_start = v_q
         WHERE c.computed_at > coalesce(r.finalized_at, v_q_closed)
           AND r.status IS DISTINCT FROM 'draft'
           AND NOT EXISTS (SELECT 1 FROM waybill.billing_records f
                            WHERE f.project_id = c.project_id AND f.period_start = p_period_start
                              AND f.status <> 'draft');
        CONTINUE WHEN v_candidates IS NULL;

        INSERT INTO billing_lines
        SELECT c.project_id, 100000 + extract(epoch FROM v_q_to)::bigint, 'adjustment', NULL,
               'Adjustment for ' || to_char(v_q, 'YYYY-MM') || ' (usage received after it was finalized)',
               NULL, v_q::timestamp AT TIME ZONE 'UTC', v_q_to, NULL, NULL, NULL, NULL, NULL,
               coalesce(re.amount, 0) - coalesce(bi.amount, 0), v_q
          FROM unnest(v_candidates) AS c(project_id)
          LEFT JOIN (
              SELECT u.project_id, sum(l.amount_cents) AS amount
                FROM waybill.billing_segment_usage(v_q, v_q_to, v_candidates) u
               CROSS JOIN LATERAL waybill.price_segment(
                         u.plan_id, extract(epoch FROM u.segment_to - u.segment_from),
                         extract(epoch FROM v_q_to - (v_q::timestamp AT TIME ZONE 'UTC')),
                         u.compute_gb_seconds, u.storage_gb_seconds, u.build_seconds,
                         u.bandwidth_gb, u.custom_domains) l
               GROUP BY u.project_id
          ) re ON re.project_id = c.project_id
          LEFT JOIN (
              SELECT bl.project_id, sum(bl.amount_cents) AS amount
                FROM waybill.billing_record_lines bl
                JOIN waybill.billing_records br
                  ON br.project_id = bl.project_id AND br.record_id = bl.record_id
               WHERE bl.project_id = ANY (v_candidates) AND br.status <> 'draft'
                 AND ((br.period_start = v_q AND bl.kind IN ('base_fee', 'usage'))
                      OR (bl.kind = 'adjustment' AND bl.adjustment_period = v_q))
               GROUP BY bl.project_id
          ) bi ON bi.project_id = c.project_id
         WHERE coalesce(re.amount, 0) <> coalesce(bi.amount, 0);
    END LOOP;

    CREATE INDEX ON billing_lines (project_id);
    ANALYZE billing_lines;  -- temp tables get no statistics otherwise

    -- Only projects whose lines differ from their draft's are rewritten: a rerun
    -- inside the grace period, or the recompute before finalizing, writes only
    -- what late usage changed. (usage_as_of/computed_at say when a draft's
    -- amounts last changed.)
    DROP TABLE IF EXISTS pg_temp.billing_changed;
    CREATE TEMP TABLE billing_changed ON COMMIT DROP AS
    SELECT DISTINCT coalesce(n.project_id, o.project_id) AS project_id
      FROM (SELECT t.*, row_number() OVER (PARTITION BY t.project_id ORDER BY t.seq)::integer
                        AS line_no
              FROM billing_lines t) n
      FULL JOIN (SELECT l.*
                   FROM waybill.billing_record_lines l
                   JOIN waybill.billing_records r
                     ON r.project_id = l.project_id AND r.record_id = l.record_id
                  WHERE r.period_start = p_period_start AND r.status = 'draft') o
        ON o.project_id = n.project_id AND o.line_no = n.line_no
     WHERE (n.kind, n.metric, n.description, n.plan_id, n.segment_from, n.segment_to, n.quantity,
            n.included, n.billable, n.unit, n.unit_price, n.amount_cents, n.adjustment_period)
           IS DISTINCT FROM
           (o.kind, o.metric, o.description, o.plan_id, o.segment_from, o.segment_to, o.quantity,
            o.included, o.billable, o.unit, o.unit_price, o.amount_cents, o.adjustment_period);
    CREATE INDEX ON billing_changed (project_id);
    ANALYZE billing_changed;

    DELETE FROM waybill.billing_records r
     WHERE r.period_start = p_period_start AND r.status = 'draft'
       AND r.project_id IN (SELECT c.project_id FROM billing_changed c)
       AND NOT EXISTS (SELECT 1 FROM billing_lines t WHERE t.project_id = r.project_id);

    INSERT INTO waybill.billing_records AS r
           (project_id, period_start, status, currency, subtotal_cents, credits_cents, total_cents,
            usage_as_of, computed_at)
    SELECT t.project_id, p_period_start, 'draft', v_currency, sum(t.amount_cents), 0,
           greatest(0, sum(t.amount_cents)), v_usage_as_of, p_as_of
      FROM billing_lines t
     WHERE t.project_id IN (SELECT c.project_id FROM billing_changed c)
     GROUP BY t.project_id
    ON CONFLICT ON CONSTRAINT billing_records_period_key DO UPDATE
       SET subtotal_cents = excluded.subtotal_cents, credits_cents = 0,
           total_cents = excluded.total_cents, usage_as_of = excluded.usage_as_of,
           computed_at = excluded.computed_at, updated_at = now()
     WHERE r.status = 'draft';
    -- The first run of a month adds thousands of records: plan what follows with
    -- statistics that know them (a few pages sampled: cheap).
    ANALYZE waybill.billing_records;

    DELETE FROM waybill.billing_record_lines l
     USING waybill.billing_records r
     WHERE r.project_id = l.project_id AND r.record_id = l.record_id
       AND r.period_start = p_period_start AND r.status = 'draft'
       AND r.project_id IN (SELECT c.project_id FROM billing_changed c);

    INSERT INTO waybill.billing_record_lines
           (project_id, record_id, line_no, kind, metric, description, plan_id, segment_from,
            segment_to, quantity, included, billable, unit, unit_price, amount_cents,
            adjustment_period)
    SELECT t.project_id, r.record_id,
           row_number() OVER (PARTITION BY t.project_id ORDER BY t.seq)::integer,
           t.kind, t.metric, t.description, t.plan_id, t.segment_from, t.segment_to, t.quantity,
           t.included, t.billable, t.unit, t.unit_price, t.amount_cents, t.adjustment_period
      FROM billing_lines t
      JOIN waybill.billing_records r
        ON r.project_id = t.project_id AND r.period_start = p_period_start AND r.status = 'draft'
     WHERE t.project_id IN (SELECT c.project_id FROM billing_changed c);

    GET DIAGNOSTICS v_count = ROW_COUNT;
    SELECT count(*) INTO v_count FROM waybill.billing_records r
     WHERE r.period_start = p_period_start AND r.status = 'draft';
    DROP TABLE IF EXISTS pg_temp.billing_lines;
    DROP TABLE IF EXISTS pg_temp.billing_changed;
    RETURN v_count;
END
$$;
