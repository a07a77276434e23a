-- One row per run, created by the enqueue that first names it.
-- migrate:drops runs

-- migrate:up
CREATE TABLE runs (
    run_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL,
    finished_at double precision,
    metrics     text NOT NULL DEFAULT '{}',
    -- Creation order, for list_runs' cursor (SQLite uses its rowid).
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);

CREATE INDEX jobs_run ON jobs (run_id, status);

INSERT INTO runs (run_id, tenant_id, created_at, updated_at, finished_at)
SELECT run_id, min(tenant_id), min(created_at), max(updated_at),
       CASE WHEN count(*) FILTER (WHERE status IN ('pending', 'leased')) = 0
            THEN max(finished_at) END
FROM jobs GROUP BY run_id ORDER BY min(id);

-- migrate:down
DROP INDEX jobs_run;

DROP TABLE runs;
