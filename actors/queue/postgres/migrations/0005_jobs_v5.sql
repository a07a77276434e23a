-- The columns of SQLite's migration 4 (ids here already come from a sequence, which never hands
-- a purged id out again). Defaults are constants: no table rewrite.

-- migrate:up
ALTER TABLE jobs
    ADD COLUMN lease_owner      text,
    ADD COLUMN started_at       double precision,
    ADD COLUMN cross_tenant_key boolean NOT NULL DEFAULT false,
    ADD COLUMN timeout_seconds  double precision;

-- migrate:down
ALTER TABLE jobs
    DROP COLUMN lease_owner, DROP COLUMN started_at,
    DROP COLUMN cross_tenant_key, DROP COLUMN timeout_seconds;
