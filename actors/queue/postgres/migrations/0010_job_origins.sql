-- SQLite's `job_origins` step: where an imported job came from (`d1:<id>`, `kv:<task id>`;
-- NULL for a job enqueued here), so the old system's references still name it. A column
-- without a default: no table rewrite. One origin names at most one job.

-- migrate:up
ALTER TABLE jobs ADD COLUMN origin text;

CREATE UNIQUE INDEX jobs_origin ON jobs (origin) WHERE origin IS NOT NULL;

-- migrate:down
DROP INDEX jobs_origin;

ALTER TABLE jobs DROP COLUMN origin;
