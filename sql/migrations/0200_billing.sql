-- depends: 0002_usage_and_keys
-- Pricing and billing: plans, subscriptions (with history), monthly billing
-- records and their lines, promotional credits and where each cent went.
--
-- Money that reaches an invoice (or Stripe) is integer cents (bigint) with a
-- currency; rates and quantities are numeric. A record is `draft` until the
-- grace period after its month ends, then finalized (`open`) and immutable:
-- triggers below refuse any change to its amounts or lines, for every role.
-- Every unique key of a per-project table includes project_id.

CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TYPE waybill.billing_status AS ENUM ('draft', 'open', 'paid', 'void', 'uncollectible');
CREATE TYPE waybill.billing_line_kind AS ENUM ('base_fee', 'usage', 'adjustment', 'credit');

-- The one place default rates and the grace period live (a single row). The
-- service and `waybill bill` write it from PRICE_* and BILLING_GRACE_PERIOD; the
-- pg_cron job, which sees no environment, reads it. Seeded with the contract's
-- defaults.
CREATE TABLE waybill.billing_settings (
    settings_id            boolean     NOT NULL DEFAULT true,
    price_compute_gb_hour  numeric     NOT NULL,
    price_build_minute     numeric     NOT NULL,
    price_storage_gb_month numeric     NOT NULL,
    price_bandwidth_gb     numeric     NOT NULL,
    -- No contract rate for custom domains: 0 (domains over the included count are
    -- shown, not charged) unless an operator sets one here or on a plan.
    price_custom_domain    numeric     NOT NULL DEFAULT 0,
    grace_period           interval    NOT NULL DEFAULT interval '1 hour',
    currency               text        NOT NULL DEFAULT 'usd',
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT billing_settings_pkey PRIMARY KEY (settings_id),
    CONSTRAINT billing_settings_single_row_check CHECK (settings_id),
    CONSTRAINT billing_settings_rates_check CHECK (
        price_compute_gb_hour >= 0 AND price_build_minute >= 0 AND price_storage_gb_month >= 0
        AND price_bandwidth_gb >= 0 AND price_custom_domain >= 0),
    CONSTRAINT billing_settings_grace_check CHECK (grace_period >= interval '0')
);
INSERT INTO waybill.billing_settings
    (price_compute_gb_hour, price_build_minute, price_storage_gb_month, price_bandwidth_gb)
VALUES (0.000463, 0.01, 0.25, 0.10);

-- Included amounts are per full month (NULL = unlimited); a NULL rate means the
-- default from billing_settings. Plans are reference data, not per project.
CREATE TABLE waybill.pricing_plans (
    plan_id                    text        NOT NULL,
    name                       text        NOT NULL,
    base_fee_cents             bigint      NOT NULL,
    currency                   text        NOT NULL DEFAULT 'usd',
    included_compute_gb_hours  numeric,
    included_build_minutes     numeric,
    included_storage_gb_months numeric,
    included_bandwidth_gb      numeric,
    included_custom_domains    integer,
    rate_compute_gb_hour       numeric,
    rate_build_minute          numeric,
    rate_storage_gb_month      numeric,
    rate_bandwidth_gb          numeric,
    rate_custom_domain         numeric,
    stripe_price_id            text,
    sort_order                 integer     NOT NULL DEFAULT 0,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pricing_plans_pkey PRIMARY KEY (plan_id),
    CONSTRAINT pricing_plans_plan_id_check CHECK (plan_id ~ '^[a-z][a-z0-9_-]{0,63}$'),
    CONSTRAINT pricing_plans_base_fee_check CHECK (base_fee_cents >= 0),
    CONSTRAINT pricing_plans_included_check CHECK (
        coalesce(included_compute_gb_hours, 0) >= 0 AND coalesce(included_build_minutes, 0) >= 0
        AND coalesce(included_storage_gb_months, 0) >= 0 AND coalesce(included_bandwidth_gb, 0) >= 0
        AND coalesce(included_custom_domains, 0) >= 0),
    CONSTRAINT pricing_plans_rates_check CHECK (
        coalesce(rate_compute_gb_hour, 0) >= 0 AND coalesce(rate_build_minute, 0) >= 0
        AND coalesce(rate_storage_gb_month, 0) >= 0 AND coalesce(rate_bandwidth_gb, 0) >= 0
        AND coalesce(rate_custom_domain, 0) >= 0),
    CONSTRAINT pricing_plans_stripe_price_key UNIQUE (stripe_price_id)
);
INSERT INTO waybill.pricing_plans (plan_id, name, base_fee_cents, included_compute_gb_hours,
    included_build_minutes, included_storage_gb_months, included_bandwidth_gb,
    included_custom_domains, rate_compute_gb_hour, rate_build_minute, rate_storage_gb_month,
    rate_bandwidth_gb, sort_order)
VALUES ('hobby', 'Hobby',  500,  500,  500,  1,  100, 1,    0.000463, 0.01,  0.25, 0.10, 1),
       ('pro',   'Pro',   2000, 2000, 2000, 10,  500, NULL, 0.000463, 0.01,  0.20, 0.08, 2),
       ('team',  'Team',  5000, 5000, 5000, 50, 1024, NULL, 0.0004,   0.008, 0.15, 0.05, 3);

-- Subscription history: each row says "from effective_at, this project is on
-- plan_id" (NULL = cancelled: pay as you go). The plan in force at t is the
-- latest live row at or before t. A change that is later overridden (a
-- back-dated change supersedes those after it) keeps its row, marked superseded.
CREATE TABLE waybill.subscriptions (
    project_id             uuid        NOT NULL,
    subscription_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    plan_id                text,
    effective_at           timestamptz NOT NULL,
    source                 text        NOT NULL DEFAULT 'api',
    stripe_subscription_id text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    superseded_at          timestamptz,
    CONSTRAINT subscriptions_pkey PRIMARY KEY (project_id, subscription_id),
    CONSTRAINT subscriptions_plan_fkey FOREIGN KEY (plan_id) REFERENCES waybill.pricing_plans (plan_id),
    CONSTRAINT subscriptions_source_check CHECK (source IN ('api', 'stripe', 'cli'))
);
CREATE UNIQUE INDEX subscriptions_live_key
    ON waybill.subscriptions (project_id, effective_at) WHERE superseded_at IS NULL;
CREATE INDEX subscriptions_live_effective_idx
    ON waybill.subscriptions (effective_at) WHERE superseded_at IS NULL;

CREATE TABLE waybill.billing_records (
    project_id            uuid                   NOT NULL,
    record_id             uuid                   NOT NULL DEFAULT gen_random_uuid(),
    period_start          date                   NOT NULL,  -- first day of the UTC month
    status                waybill.billing_status NOT NULL DEFAULT 'draft',
    currency              text                   NOT NULL DEFAULT 'usd',
    subtotal_cents        bigint                 NOT NULL,  -- sum of base, usage and adjustment lines; may be < 0
    credits_cents         bigint                 NOT NULL DEFAULT 0,  -- credits applied (>= 0)
    total_cents           bigint                 NOT NULL,  -- max(0, subtotal - credits)
    carried_forward_cents bigint                 NOT NULL DEFAULT 0,  -- a negative subtotal, granted as credit
    usage_as_of           timestamptz,            -- usage up to this instant is included
    computed_at           timestamptz            NOT NULL DEFAULT now(),
    finalized_at          timestamptz,
    stripe_invoice_id     text,
    created_at            timestamptz            NOT NULL DEFAULT now(),
    updated_at            timestamptz            NOT NULL DEFAULT now(),
    CONSTRAINT billing_records_pkey PRIMARY KEY (project_id, record_id),
    CONSTRAINT billing_records_period_key UNIQUE (project_id, period_start),
    CONSTRAINT billing_records_period_check CHECK (extract(day FROM period_start) = 1),
    CONSTRAINT billing_records_total_check CHECK (
        total_cents >= 0 AND credits_cents >= 0 AND carried_forward_cents >= 0
        AND total_cents = greatest(0, subtotal_cents - credits_cents)),
    CONSTRAINT billing_records_finalized_check CHECK ((status = 'draft') = (finalized_at IS NULL))
);
CREATE INDEX billing_records_period_status_idx ON waybill.billing_records (period_start, status);

CREATE TABLE waybill.billing_record_lines (
    project_id        uuid                      NOT NULL,
    record_id         uuid                      NOT NULL,
    line_no           integer                   NOT NULL,
    kind              waybill.billing_line_kind NOT NULL,
    metric            text,          -- compute_gb_hours, build_minutes, storage_gb_months, bandwidth_gb, custom_domains
    description       text                      NOT NULL,
    plan_id           text,          -- the plan of the segment (NULL: pay as you go)
    segment_from      timestamptz,
    segment_to        timestamptz,
    quantity          numeric,
    included          numeric,       -- NULL: unlimited
    billable          numeric,
    unit              text,
    unit_price        numeric,
    amount_cents      bigint                    NOT NULL,
    adjustment_period date,          -- adjustment lines: the month the usage belongs to
    credit_id         uuid,          -- credit lines: the credit applied
    CONSTRAINT billing_record_lines_pkey PRIMARY KEY (project_id, record_id, line_no),
    CONSTRAINT billing_record_lines_record_fkey FOREIGN KEY (project_id, record_id)
        REFERENCES waybill.billing_records (project_id, record_id) ON DELETE CASCADE,
    CONSTRAINT billing_record_lines_kind_check CHECK (
        (kind = 'adjustment') = (adjustment_period IS NOT NULL)
        AND (kind = 'credit') = (credit_id IS NOT NULL)
        AND (kind <> 'credit' OR amount_cents < 0))
);
CREATE INDEX billing_record_lines_adjustment_idx
    ON waybill.billing_record_lines (project_id, adjustment_period) WHERE kind = 'adjustment';

CREATE TABLE waybill.credits (
    project_id       uuid        NOT NULL,
    credit_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    amount_cents     bigint      NOT NULL,
    currency         text        NOT NULL DEFAULT 'usd',
    reason           text        NOT NULL,
    granted_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz,
    source_record_id uuid,       -- set when the credit carries a negative record forward
    CONSTRAINT credits_pkey PRIMARY KEY (project_id, credit_id),
    CONSTRAINT credits_amount_check CHECK (amount_cents > 0),
    CONSTRAINT credits_reason_check CHECK (length(reason) BETWEEN 1 AND 500),
    CONSTRAINT credits_source_record_key UNIQUE (project_id, source_record_id)
);

-- One row per credit and record: finalizing twice cannot apply a credit twice to
-- one record, and the finalizer locks the credit rows before reading what is left.
CREATE TABLE waybill.credit_applications (
    project_id   uuid        NOT NULL,
    credit_id    uuid        NOT NULL,
    record_id    uuid        NOT NULL,
    amount_cents bigint      NOT NULL,
    applied_at   timestamptz NOT NULL,
    CONSTRAINT credit_applications_pkey PRIMARY KEY (project_id, credit_id, record_id),
    CONSTRAINT credit_applications_credit_fkey FOREIGN KEY (project_id, credit_id)
        REFERENCES waybill.credits (project_id, credit_id),
    CONSTRAINT credit_applications_record_fkey FOREIGN KEY (project_id, record_id)
        REFERENCES waybill.billing_records (project_id, record_id),
    CONSTRAINT credit_applications_amount_check CHECK (amount_cents > 0)
);

-- Billing reads one month of hourly_usage for every project at once: a BRIN index
-- on hour serves that range for the cost of a few pages (rows arrive in hour order).
CREATE INDEX hourly_usage_hour_brin ON waybill.hourly_usage USING brin (hour);

-- Finalized records are immutable: amounts, period and lines never change again;
-- only the status may move forward (open -> paid | void | uncollectible,
-- uncollectible -> paid | void) and Stripe columns may be filled in.
CREATE FUNCTION waybill.guard_billing_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'billing record % is finalized and cannot be deleted', OLD.record_id
                USING ERRCODE = 'WB409';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'draft' THEN
        RETURN NEW;
    END IF;
    IF (NEW.project_id, NEW.record_id, NEW.period_start, NEW.currency, NEW.subtotal_cents,
        NEW.credits_cents, NEW.total_cents, NEW.carried_forward_cents, NEW.usage_as_of,
        NEW.computed_at, NEW.finalized_at)
       IS DISTINCT FROM
       (OLD.project_id, OLD.record_id, OLD.period_start, OLD.currency, OLD.subtotal_cents,
        OLD.credits_cents, OLD.total_cents, OLD.carried_forward_cents, OLD.usage_as_of,
        OLD.computed_at, OLD.finalized_at)
    THEN
        RAISE EXCEPTION 'billing record % is finalized and immutable', OLD.record_id
            USING ERRCODE = 'WB409';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'open' AND NEW.status IN ('paid', 'void', 'uncollectible'))
        OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void')))
    THEN
        RAISE EXCEPTION 'billing record % cannot move from % to %', OLD.record_id, OLD.status, NEW.status
            USING ERRCODE = 'WB409';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER billing_records_guard
    BEFORE UPDATE OR DELETE ON waybill.billing_records
    FOR EACH ROW EXECUTE FUNCTION waybill.guard_billing_record();

CREATE FUNCTION waybill.guard_billing_line() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_status waybill.billing_status;
BEGIN
    SELECT status INTO v_status FROM waybill.billing_records
     WHERE project_id = (CASE WHEN TG_OP = 'INSERT' THEN NEW.project_id ELSE OLD.project_id END)
       AND record_id = (CASE WHEN TG_OP = 'INSERT' THEN NEW.record_id ELSE OLD.record_id END);
    IF v_status IS NOT NULL AND v_status <> 'draft' THEN
        RAISE EXCEPTION 'lines of a finalized billing record are immutable (% refused)', TG_OP
            USING ERRCODE = 'WB409';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

CREATE TRIGGER billing_record_lines_guard
    BEFORE INSERT OR UPDATE OR DELETE ON waybill.billing_record_lines
    FOR EACH ROW EXECUTE FUNCTION waybill.guard_billing_line();

CREATE FUNCTION waybill.reject_credit_application_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_applications is append-only (% refused)', TG_OP
        USING ERRCODE = 'WB409';
END
$$;

CREATE TRIGGER credit_applications_append_only
    BEFORE UPDATE OR DELETE ON waybill.credit_applications
    FOR EACH ROW EXECUTE FUNCTION waybill.reject_credit_application_change();
