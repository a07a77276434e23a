-- The stored counts of migration 3 become a base (what `runs` holds) plus deltas in up to
-- 16 + 1 rows per run, one per connection slot (pg_backend_pid() % 16) and one for purge: an
-- enqueue or an ack adds to its own slot's row, so workers in many processes do not queue behind
-- one hot run row, its lock held to each commit. A run's state is read as base + shards
-- (sql/run_state.sql); `finished_at` is derived there.

-- migrate:up
CREATE TABLE run_counts (
    run_id      text    NOT NULL,
    shard       integer NOT NULL,
    done        bigint  NOT NULL DEFAULT 0,
    failed      bigint  NOT NULL DEFAULT 0,
    total       bigint  NOT NULL DEFAULT 0,
    metrics     jsonb,
    -- The latest time a job of the run finished through this shard.
    finished_at double precision,
    updated_at  double precision,
    PRIMARY KEY (run_id, shard)
);

-- One partial index over the leased jobs (those in flight) serves the reap (by expiry) and a
-- run's leased count (run_id, covered): one index entry per lease instead of two.
DROP INDEX jobs_lease_expiry;

DROP INDEX jobs_run_leased;

CREATE INDEX jobs_leased ON jobs (lease_expires_at) INCLUDE (run_id)
WHERE status = 'leased';

-- No index on the jobs' run: every change of a job's status (three per job) would write an
-- entry into it. A run's jobs are listed by id from `first_id`, a lower bound of its job ids
-- kept by enqueue (the first batch's smallest id; an enqueue that could not vouch for the run
-- lowers it in its transaction) and by `store migrate`.
ALTER TABLE runs ADD COLUMN first_id bigint NOT NULL DEFAULT 0;

UPDATE runs SET first_id = coalesce(
    (SELECT min(id) FROM jobs WHERE jobs.run_id = runs.run_id), 0);

DROP INDEX jobs_run;

-- migrate:down
-- Folds the shards back into `runs`, reading the run state as this migration left it (the
-- query of sql/run_state.sql, written out: a migration never changes once released).
UPDATE runs SET done = s.done, failed = s.failed, total = s.total,
                metrics = s.metrics, finished_at = s.finished_at,
                updated_at = s.updated_at
FROM (
    SELECT r.run_id, r.tenant_id, r.created_at,
           greatest(r.updated_at, c.updated_at,
                    CASE WHEN r.done + c.done + r.failed + c.failed >= r.total + c.total
                         THEN greatest(r.finished_at, c.finished_at) END) AS updated_at,
           CASE WHEN r.done + c.done + r.failed + c.failed >= r.total + c.total
                THEN greatest(r.finished_at, c.finished_at) END AS finished_at,
           CASE WHEN c.metrics IS NOT TRUE THEN r.metrics ELSE (
               SELECT jsonb_object_agg(m.key, m.value)::text FROM (
                   SELECT e.key, sum(e.value::float8) AS value FROM (
                       SELECT * FROM jsonb_each_text(r.metrics::jsonb)
                       UNION ALL
                       SELECT x.* FROM run_counts s, jsonb_each_text(s.metrics) AS x
                       WHERE s.run_id = r.run_id AND s.metrics IS NOT NULL
                   ) e GROUP BY e.key
               ) m) END AS metrics,
           r.total + c.total - r.done - c.done - r.failed - c.failed - coalesce(l.leased, 0)
               AS pending,
           coalesce(l.leased, 0) AS leased, r.done + c.done AS done,
           r.failed + c.failed AS failed,
           r.total + c.total AS total, r.seq
    FROM runs r
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(s.done), 0)::bigint AS done,
               coalesce(sum(s.failed), 0)::bigint AS failed,
               coalesce(sum(s.total), 0)::bigint AS total, max(s.finished_at) AS finished_at,
               max(s.updated_at) AS updated_at,
               bool_or(s.metrics IS NOT NULL) AS metrics
        FROM run_counts s WHERE s.run_id = r.run_id
    ) c
    LEFT JOIN (
        SELECT run_id, count(*) AS leased FROM jobs WHERE status = 'leased' GROUP BY run_id
    ) l ON l.run_id = r.run_id
) s WHERE runs.run_id = s.run_id;

DROP TABLE run_counts;

CREATE INDEX jobs_run ON jobs (run_id, status);

ALTER TABLE runs DROP COLUMN first_id;

DROP INDEX jobs_leased;

CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE status = 'leased';

CREATE INDEX jobs_run_leased ON jobs (run_id) WHERE status = 'leased';
