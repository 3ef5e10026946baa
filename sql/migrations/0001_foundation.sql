-- Foundation: the service schema, its roles, and the append-only event store.
--
-- usage_events holds every accepted event exactly once. Exactly-once lives in
-- event_keys: one row per (project_id, dedupe_key) under its primary key, written
-- in the same statement as the event. Keeping the key in its own table lets
-- usage_events be partitioned by month later (a unique index on a partitioned table
-- must contain the partition key, which would make dedupe per month) while dedupe
-- stays global. Both keys include project_id, the distribution column on Citus.

CREATE SCHEMA IF NOT EXISTS waybill;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'waybill_app') THEN
        CREATE ROLE waybill_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'waybill_analyst') THEN
        CREATE ROLE waybill_analyst NOLOGIN;
    END IF;
END
$$;

-- The login that runs migrations may act as the service role (the pool does SET ROLE).
GRANT waybill_app TO CURRENT_USER;

CREATE TYPE waybill.event_type AS ENUM (
    'deployment.started', 'deployment.scaled', 'deployment.stopped', 'compute.snapshot',
    'build.started', 'build.completed', 'build.failed',
    'volume.created', 'volume.resized', 'volume.deleted',
    'bandwidth.usage', 'domain.added', 'domain.removed'
);

CREATE TABLE waybill.event_keys (
    project_id     uuid        NOT NULL,
    dedupe_key     uuid        NOT NULL,  -- 128-bit digest of the idempotency key or the content
    content_digest uuid        NOT NULL,  -- digest of the content, to spot a key reused for other content
    event_id       uuid        NOT NULL,
    CONSTRAINT event_keys_pkey PRIMARY KEY (project_id, dedupe_key)
);

CREATE TABLE waybill.usage_events (
    seq             bigint GENERATED ALWAYS AS IDENTITY,  -- ingestion order
    event_id        uuid              NOT NULL,           -- time-ordered (UUIDv7)
    project_id      uuid              NOT NULL,
    event_type      waybill.event_type NOT NULL,
    resource_type   text              NOT NULL,
    resource_id     text              NOT NULL,
    event_time      timestamptz       NOT NULL,
    received_at     timestamptz       NOT NULL DEFAULT now(),
    idempotency_key text,
    -- What metering reads, extracted at ingest so rollups never parse jsonb.
    replicas        numeric,
    cpu_millicores  numeric,
    memory_mb       numeric,
    size_gb         numeric,
    quantity        numeric,   -- duration_seconds of a build, egress_gb of bandwidth
    metrics         jsonb             NOT NULL,  -- every metric as sent, billed or not
    metadata        jsonb,
    team_id         uuid,
    resource_name   text,
    CONSTRAINT usage_events_pkey PRIMARY KEY (seq, project_id),
    CONSTRAINT usage_events_resource_type_check CHECK (length(resource_type) BETWEEN 1 AND 64),
    CONSTRAINT usage_events_resource_id_check CHECK (length(resource_id) BETWEEN 1 AND 255)
);

-- Append-only, for every role: corrections are new events, never edits.
CREATE FUNCTION waybill.reject_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'usage_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER usage_events_append_only
    BEFORE UPDATE OR DELETE ON waybill.usage_events
    FOR EACH ROW EXECUTE FUNCTION waybill.reject_event_change();
CREATE TRIGGER usage_events_no_truncate
    BEFORE TRUNCATE ON waybill.usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION waybill.reject_event_change();
CREATE TRIGGER event_keys_append_only
    BEFORE UPDATE OR DELETE ON waybill.event_keys
    FOR EACH ROW EXECUTE FUNCTION waybill.reject_event_change();

REVOKE ALL ON SCHEMA waybill FROM PUBLIC;
