-- Stored counts, so a run summary does not count a large run's jobs. The verbs that move a job
-- into or out of done or failed (ack, reap, requeue, purge) and enqueue update them in their own
-- transaction, one statement for all the runs of a batch. A claim changes none of them and never
-- touches a run row (ARCHITECTURE.md).

-- migrate:up
ALTER TABLE runs
    ADD COLUMN done   bigint NOT NULL DEFAULT 0,
    ADD COLUMN failed bigint NOT NULL DEFAULT 0,
    ADD COLUMN total  bigint NOT NULL DEFAULT 0;

UPDATE runs SET done = c.done, failed = c.failed, total = c.total
FROM (SELECT run_id,
             count(*) FILTER (WHERE status = 'done') AS done,
             count(*) FILTER (WHERE status = 'failed') AS failed,
             count(*) AS total
      FROM jobs GROUP BY run_id) c
WHERE runs.run_id = c.run_id;

-- The leased jobs of a run, counted at read time (only the jobs in flight); pending is
-- total - done - failed - leased.
CREATE INDEX jobs_run_leased ON jobs (run_id) WHERE status = 'leased';

-- migrate:down
DROP INDEX jobs_run_leased;

ALTER TABLE runs DROP COLUMN done, DROP COLUMN failed, DROP COLUMN total;
