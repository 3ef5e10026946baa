-- depends: 0200_billing
-- The lines of a finalized record stay immutable, checked once per statement
-- (transition tables) instead of once per row: a month of drafts is tens of
-- thousands of lines, rewritten on every draft run.
DROP TRIGGER billing_record_lines_guard ON waybill.billing_record_lines;
DROP FUNCTION waybill.guard_billing_line();

-- Rows written (INSERT, UPDATE): none may belong to a finalized record.
CREATE FUNCTION waybill.guard_billing_lines_written() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_lines l JOIN waybill.billing_records r
                   ON r.project_id = l.project_id AND r.record_id = l.record_id
                WHERE r.status <> 'draft') THEN
        RAISE EXCEPTION 'lines of a finalized billing record are immutable (% refused)', TG_OP
            USING ERRCODE = 'WB409';
    END IF;
    RETURN NULL;
END
$$;

-- Rows changed or removed (UPDATE, DELETE): none may belong to a finalized record.
CREATE FUNCTION waybill.guard_billing_lines_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_lines l JOIN waybill.billing_records r
                   ON r.project_id = l.project_id AND r.record_id = l.record_id
                WHERE r.status <> 'draft') THEN
        RAISE EXCEPTION 'lines of a finalized billing record are immutable (% refused)', TG_OP
            USING ERRCODE = 'WB409';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER billing_record_lines_guard_insert
    AFTER INSERT ON waybill.billing_record_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION waybill.guard_billing_lines_written();
CREATE TRIGGER billing_record_lines_guard_update_new
    AFTER UPDATE ON waybill.billing_record_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION waybill.guard_billing_lines_written();
CREATE TRIGGER billing_record_lines_guard_update_old
    AFTER UPDATE ON waybill.billing_record_lines
    REFERENCING OLD TABLE AS old_lines
    FOR EACH STATEMENT EXECUTE FUNCTION waybill.guard_billing_lines_removed();
CREATE TRIGGER billing_record_lines_guard_delete
    AFTER DELETE ON waybill.billing_record_lines
    REFERENCING OLD TABLE AS old_lines
    FOR EACH STATEMENT EXECUTE FUNCTION waybill.guard_billing_lines_removed();
