-- waybill.finalize_period: finalize one month's billing records (draft -> open).
--
-- Inputs: p_period_start (first day of a UTC month), p_as_of (the instant of
-- finalization; must be at least the grace period, billing_settings.grace_period,
-- after the month's end).
-- Output: the number of records finalized by this call (0 when run again).
-- Side effects: recomputes the drafts (waybill.bill_period, same lock), then for
-- each draft: applies the project's credits, soonest-expiring first (credits
-- without expiry last, then oldest grant first), to a positive subtotal; a credit
-- counts if it has not expired at the month's end. Each application is one row
-- in credit_applications (credit, record) and a credit line on the record; the
-- credit rows are locked first, so a cent is never applied twice. A negative
-- subtotal (a downward adjustment) becomes a credit carried forward. Then the
-- record is `open` with finalized_at = p_as_of, and immutable from then on.
-- Errors: WB409 inside the grace period; WB422 as bill_period.
CREATE OR REPLACE FUNCTION waybill.finalize_period(p_period_start date, p_as_of timestamptz)
RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    v_to    timestamptz := (p_period_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    v_grace interval;
    v_count integer;
BEGIN
    SELECT grace_period INTO v_grace FROM waybill.billing_settings;
    IF p_as_of < v_to + v_grace THEN
        RAISE EXCEPTION 'period % is in its grace period until %', to_char(p_period_start, 'YYYY-MM'),
            v_to + v_grace USING ERRCODE = 'WB409';
    END IF;
    PERFORM waybill.bill_period(p_period_start, p_as_of);

    PERFORM 1 FROM waybill.credits c
      JOIN waybill.billing_records r
        ON r.project_id = c.project_id AND r.period_start = p_period_start AND r.status = 'draft'
     ORDER BY c.project_id, c.credit_id
       FOR UPDATE OF c;

    WITH available AS (
        SELECT c.project_id, c.credit_id, c.expires_at, c.granted_at, r.record_id, r.subtotal_cents,
               c.amount_cents - coalesce((SELECT sum(a.amount_cents) FROM waybill.credit_applications a
                                           WHERE a.project_id = c.project_id
                                             AND a.credit_id = c.credit_id), 0) AS remaining
          FROM waybill.credits c
          JOIN waybill.billing_records r
            ON r.project_id = c.project_id AND r.period_start = p_period_start AND r.status = 'draft'
         WHERE r.subtotal_cents > 0 AND (c.expires_at IS NULL OR c.expires_at > v_to)
    ), ordered AS (
        SELECT a.*, sum(a.remaining) OVER (PARTITION BY a.project_id
                                           ORDER BY a.expires_at NULLS LAST, a.granted_at, a.credit_id
                                           ROWS UNBOUNDED PRECEDING) - a.remaining AS used_before
          FROM available a WHERE a.remaining > 0
    )
    INSERT INTO waybill.credit_applications (project_id, credit_id, record_id, amount_cents, applied_at)
    SELECT o.project_id, o.credit_id, o.record_id, least(o.remaining, o.subtotal_cents - o.used_before), p_as_of
      FROM ordered o
     WHERE o.subtotal_cents - o.used_before > 0
    ON CONFLICT ON CONSTRAINT credit_applications_pkey DO NOTHING;

    INSERT INTO waybill.billing_record_lines
           (project_id, record_id, line_no, kind, description, amount_cents, credit_id)
    SELECT a.project_id, a.record_id,
           (SELECT max(l.line_no) FROM waybill.billing_record_lines l
             WHERE l.project_id = a.project_id AND l.record_id = a.record_id)
             + row_number() OVER (PARTITION BY a.project_id ORDER BY c.expires_at NULLS LAST,
                                  c.granted_at, c.credit_id)::integer,
           'credit', 'Credit: ' || c.reason, -a.amount_cents, a.credit_id
      FROM waybill.credit_applications a
      JOIN waybill.billing_records r
        ON r.project_id = a.project_id AND r.record_id = a.record_id
      JOIN waybill.credits c ON c.project_id = a.project_id AND c.credit_id = a.credit_id
     WHERE r.period_start = p_period_start AND r.status = 'draft'
       AND NOT EXISTS (SELECT 1 FROM waybill.billing_record_lines l
                        WHERE l.project_id = a.project_id AND l.record_id = a.record_id
                          AND l.credit_id = a.credit_id);

    UPDATE waybill.billing_records r
       SET credits_cents = x.applied,
           total_cents = greatest(0, r.subtotal_cents - x.applied),
           carried_forward_cents = greatest(0, -r.subtotal_cents),
           status = 'open', finalized_at = p_as_of, updated_at = now()
      FROM (SELECT d.project_id, d.record_id,
                   coalesce((SELECT sum(a.amount_cents) FROM waybill.credit_applications a
                              WHERE a.project_id = d.project_id AND a.record_id = d.record_id),
                            0) AS applied
              FROM waybill.billing_records d
             WHERE d.period_start = p_period_start AND d.status = 'draft') x
     WHERE r.project_id = x.project_id AND r.record_id = x.record_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    INSERT INTO waybill.credits (project_id, amount_cents, currency, reason, granted_at, source_record_id)
    SELECT r.project_id, r.carried_forward_cents, r.currency,
           'Carried forward from ' || to_char(r.period_start, 'YYYY-MM'), p_as_of, r.record_id
      FROM waybill.billing_records r
     WHERE r.period_start = p_period_start AND r.carried_forward_cents > 0
    ON CONFLICT ON CONSTRAINT credits_source_record_key DO NOTHING;
    RETURN v_count;
END
$$;
