-- SQLite's `queue_controls` step: what operators set, read by every claim. One row per tenant
-- with a control, and the row of tenant '' (never a tenant's id) for the whole queue;
-- `rate_tokens` at `rate_at` is the tenant's bucket for `max_per_second`. A row exists only
-- while it controls something. The index serves fair claims: a loose scan of the tenants with
-- pending jobs, then each one's first jobs in the claim's order.
-- migrate:drops queue_controls

-- migrate:up
CREATE TABLE queue_controls (
    tenant_id      text             PRIMARY KEY,
    paused         boolean          NOT NULL DEFAULT false,
    weight         integer          NOT NULL DEFAULT 1,
    max_leased     integer,
    max_per_second double precision,
    rate_tokens    double precision,
    rate_at        double precision,
    updated_at     double precision NOT NULL
);
CREATE INDEX jobs_tenant_claim ON jobs (tenant_id, priority DESC, available_at, id)
WHERE status = 'pending';

-- migrate:down
DROP INDEX jobs_tenant_claim;
DROP TABLE queue_controls;
