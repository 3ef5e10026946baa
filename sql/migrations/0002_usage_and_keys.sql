-- depends: 0001_foundation
-- The usage tables every reader and the billing code share, and project API keys.
--
-- Quantities are kept in exact base units so that sums never drift:
-- GB-seconds (not GB-hours: an hour's share of a second is not a finite decimal),
-- build seconds, egress GB. Readers divide once, at the edge (analytics views,
-- pricing). custom_domains is the most domains attached at once in the window,
-- so it rolls up by max, never by sum.

CREATE TABLE waybill.hourly_usage (
    project_id          uuid        NOT NULL,
    hour                timestamptz NOT NULL,  -- start of the UTC hour
    compute_gb_seconds  numeric     NOT NULL DEFAULT 0,
    storage_gb_seconds  numeric     NOT NULL DEFAULT 0,
    build_seconds       numeric     NOT NULL DEFAULT 0,
    bandwidth_gb        numeric     NOT NULL DEFAULT 0,
    custom_domains      integer     NOT NULL DEFAULT 0,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT hourly_usage_pkey PRIMARY KEY (project_id, hour),
    CONSTRAINT hourly_usage_hour_check CHECK (hour = date_trunc('hour', hour, 'UTC'))
);

CREATE TABLE waybill.daily_usage (
    project_id          uuid        NOT NULL,
    day                 date        NOT NULL,  -- UTC day
    compute_gb_seconds  numeric     NOT NULL DEFAULT 0,
    storage_gb_seconds  numeric     NOT NULL DEFAULT 0,
    build_seconds       numeric     NOT NULL DEFAULT 0,
    bandwidth_gb        numeric     NOT NULL DEFAULT 0,
    custom_domains      integer     NOT NULL DEFAULT 0,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT daily_usage_pkey PRIMARY KEY (project_id, day)
);

-- Project API keys: only a SHA-256 of the key is kept (keys are 256-bit random,
-- so a slow hash adds nothing); the key itself is shown once, when issued.
CREATE TABLE waybill.project_api_keys (
    key_id      uuid        NOT NULL,
    project_id  uuid        NOT NULL,
    key_hash    bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT project_api_keys_pkey PRIMARY KEY (project_id, key_id),
    CONSTRAINT project_api_keys_hash_key UNIQUE (key_hash)
);
