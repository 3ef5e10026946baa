-- depends: 0003_ingest_json 0100_metering 0300_stripe
-- usage_events becomes partitioned by month of event_time.
--
-- Dedupe is untouched: it lives in event_keys, which stays one table, so a key
-- is unique across every month. `seq` keeps its sequence name
-- (waybill.usage_events_seq_seq, which the rollups read) but becomes a plain
-- sequence default: PostgreSQL 15 has no identity columns on partitioned tables.
-- A DEFAULT partition catches any event outside the monthly partitions, which
-- waybill.ensure_event_partitions keeps ahead of time (pg_cron, daily).

ALTER TABLE waybill.usage_events ALTER COLUMN seq DROP IDENTITY;
CREATE SEQUENCE waybill.usage_events_seq_seq AS bigint;
DO $$
BEGIN
    PERFORM setval('waybill.usage_events_seq_seq',
                   coalesce((SELECT max(seq) FROM waybill.usage_events), 0) + 1, false);
END
$$;

ALTER TABLE waybill.usage_events RENAME TO usage_events_unpartitioned;
ALTER INDEX waybill.usage_events_pkey RENAME TO usage_events_unpartitioned_pkey;

CREATE TABLE waybill.usage_events (
    seq             bigint             NOT NULL DEFAULT nextval('waybill.usage_events_seq_seq'),
    event_id        uuid               NOT NULL,
    project_id      uuid               NOT NULL,
    event_type      waybill.event_type NOT NULL,
    resource_type   text               NOT NULL,
    resource_id     text               NOT NULL,
    event_time      timestamptz        NOT NULL,
    received_at     timestamptz        NOT NULL DEFAULT now(),
    idempotency_key text,
    replicas        numeric,
    cpu_millicores  numeric,
    memory_mb       numeric,
    size_gb         numeric,
    quantity        numeric,
    metrics         jsonb              NOT NULL,
    metadata        jsonb,
    team_id         uuid,
    resource_name   text,
    CONSTRAINT usage_events_pkey PRIMARY KEY (seq, project_id, event_time),
    CONSTRAINT usage_events_resource_type_check CHECK (length(resource_type) BETWEEN 1 AND 64),
    CONSTRAINT usage_events_resource_id_check CHECK (length(resource_id) BETWEEN 1 AND 255)
) PARTITION BY RANGE (event_time);
ALTER SEQUENCE waybill.usage_events_seq_seq OWNED BY waybill.usage_events.seq;

CREATE TABLE waybill.usage_events_default PARTITION OF waybill.usage_events DEFAULT;

-- Monthly partitions for the months that already hold events, then the rows.
DO $$
DECLARE
    v_month date;
BEGIN
    FOR v_month IN
        SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC')::date
          FROM waybill.usage_events_unpartitioned
    LOOP
        EXECUTE format(
            'CREATE TABLE waybill.%I PARTITION OF waybill.usage_events FOR VALUES FROM (%L) TO (%L)',
            'usage_events_' || to_char(v_month, 'YYYY_MM'),
            (v_month::timestamp AT TIME ZONE 'UTC'),
            ((v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END
$$;

INSERT INTO waybill.usage_events (seq, event_id, project_id, event_type, resource_type,
    resource_id, event_time, received_at, idempotency_key, replicas, cpu_millicores, memory_mb,
    size_gb, quantity, metrics, metadata, team_id, resource_name)
SELECT seq, event_id, project_id, event_type, resource_type, resource_id, event_time,
       received_at, idempotency_key, replicas, cpu_millicores, memory_mb, size_gb, quantity,
       metrics, metadata, team_id, resource_name
  FROM waybill.usage_events_unpartitioned;
DROP TABLE waybill.usage_events_unpartitioned;

CREATE TRIGGER usage_events_append_only
    BEFORE UPDATE OR DELETE ON waybill.usage_events
    FOR EACH ROW EXECUTE FUNCTION waybill.reject_event_change();
CREATE TRIGGER usage_events_no_truncate
    BEFORE TRUNCATE ON waybill.usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION waybill.reject_event_change();
