-- SQLite's `cancel` step (its migration 6): the terminal status `cancelled`, a leased job's
-- cancel request (`cancel_requested_at`), and each run's cancelled jobs counted in its base row
-- and count shards like the done and failed ones. Defaults are constants: no table rewrite;
-- the widened CHECK reads the table once.

-- migrate:up
ALTER TABLE jobs ADD COLUMN cancel_requested_at double precision;

ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;

ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('pending', 'leased', 'done', 'failed', 'cancelled'));

ALTER TABLE runs ADD COLUMN cancelled bigint NOT NULL DEFAULT 0;

ALTER TABLE run_counts ADD COLUMN cancelled bigint NOT NULL DEFAULT 0;

-- migrate:down
-- Version 6 knows no `cancelled`: a cancelled job becomes a failed one whose error says so (it
-- stays finished and counted, nothing is lost); a cancel request is forgotten.
UPDATE jobs SET status = 'failed', last_error = 'cancelled' || coalesce(': ' || last_error, '')
WHERE status = 'cancelled';

UPDATE runs SET failed = failed + cancelled WHERE cancelled <> 0;

UPDATE run_counts SET failed = failed + cancelled WHERE cancelled <> 0;

ALTER TABLE run_counts DROP COLUMN cancelled;

ALTER TABLE runs DROP COLUMN cancelled;

ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;

ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('pending', 'leased', 'done', 'failed'));

ALTER TABLE jobs DROP COLUMN cancel_requested_at;
