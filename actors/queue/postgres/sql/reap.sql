-- Return every expired lease's job to pending, or fail it, and count the failures in this
-- connection's shard rows: one statement, so the jobs and their runs' counts commit together.
-- SKIP LOCKED: two workers reaping at once split the expired leases between them. A job never
-- started under the lease gets its attempt back and goes back to pending (counted nowhere); a
-- started one on its last attempt fails. $1 now; returns how many leases it ended.
WITH expired AS (
    SELECT id FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1
    FOR UPDATE SKIP LOCKED
),
reaped AS (
    -- An expired lease spends the job's attempt (the last one fails it) only if the job
    -- started: (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts).
    UPDATE jobs AS j
    SET status = CASE WHEN (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts)
                      THEN 'failed' ELSE 'pending' END,
        attempts = CASE WHEN started_at IS NULL THEN attempts - 1 ELSE attempts END,
        last_error = CASE WHEN (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts)
            THEN 'lease expired on the last attempt (' || attempts || ' of '
                 || max_attempts || ') held by worker ' || coalesce(worker_id, '?')
                 || ', which started the job and then stopped renewing it'
            ELSE last_error END,
        finished_at = CASE WHEN (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts)
                           THEN $1 END,
        lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
        lease_owner = NULL, started_at = NULL, updated_at = $1
    FROM expired WHERE j.id = expired.id
    RETURNING j.run_id, j.status
),
d AS (
    SELECT run_id, 0::bigint AS done, count(*) AS failed, 0::bigint AS total,
           NULL::jsonb AS metrics
    FROM reaped WHERE status = 'failed' GROUP BY run_id
),
-- add_counts.sql's insert: this connection's shard rows, not touched.
counted AS (
    INSERT INTO run_counts AS s (run_id, shard, done, failed, total, metrics, finished_at,
                                 updated_at)
    SELECT d.run_id, pg_backend_pid() % 16, d.done, d.failed, d.total,
           d.metrics, CASE WHEN d.done > 0 OR d.failed > 0 THEN $1::float8 END,
           NULL::float8
    FROM d ORDER BY d.run_id
    ON CONFLICT (run_id, shard) DO UPDATE
    SET done = s.done + excluded.done, failed = s.failed + excluded.failed,
        total = s.total + excluded.total,
        metrics = CASE WHEN excluded.metrics IS NULL THEN s.metrics
                       WHEN s.metrics IS NULL THEN excluded.metrics ELSE (
            SELECT jsonb_object_agg(k, coalesce((s.metrics ->> k)::float8, 0)
                                       + coalesce((excluded.metrics ->> k)::float8, 0))
            FROM jsonb_object_keys(s.metrics || excluded.metrics) AS k) END,
        finished_at = coalesce(excluded.finished_at, s.finished_at),
        updated_at = coalesce(excluded.updated_at, s.updated_at)
    RETURNING 1
)
SELECT count(*) FROM reaped
