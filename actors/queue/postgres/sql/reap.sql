-- Return every expired lease's job to pending, or fail it, and count the failures in this
-- connection's shard rows: one statement, so the jobs and their runs' counts commit together.
-- SKIP LOCKED: two workers reaping at once split the expired leases between them. A job never
-- started under the lease gets its attempt back and goes back to pending (counted nowhere); a
-- started one on its last attempt fails; one whose cancellation was requested ends `cancelled`,
-- never pending again. $1 now; returns how many leases it ended.
WITH expired AS (
    SELECT id FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1
    FOR UPDATE SKIP LOCKED
),
reaped AS (
    -- An expired lease spends the job's attempt (the last one fails it) only if the job
    -- started: (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts).
    UPDATE jobs AS j
    SET status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts)
                      THEN 'failed' ELSE 'pending' END,
        attempts = CASE WHEN started_at IS NULL THEN attempts - 1 ELSE attempts END,
        last_error = CASE WHEN j.cancel_requested_at IS NOT NULL THEN j.last_error
            WHEN (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts)
            THEN 'lease expired on the last attempt (' || attempts || ' of '
                 || max_attempts || ') held by worker ' || coalesce(worker_id, '?')
                 || ', which started the job and then stopped renewing it'
            ELSE last_error END,
        finished_at = CASE WHEN j.cancel_requested_at IS NOT NULL
                                OR (j.started_at IS NOT NULL AND j.attempts >= j.max_attempts)
                           THEN $1 END,
        lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
        lease_owner = NULL, started_at = NULL, updated_at = $1
    FROM expired WHERE j.id = expired.id
    RETURNING j.run_id, j.status
),
d AS (
    SELECT run_id, 0::bigint AS done, count(*) FILTER (WHERE status = 'failed') AS failed,
           0::bigint AS total, NULL::jsonb AS metrics,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
    FROM reaped WHERE status IN ('failed', 'cancelled') GROUP BY run_id
),
-- add_counts.sql's insert: this connection's shard rows, not touched.
counted AS (
    INSERT INTO run_counts AS s (run_id, shard, done, failed, total, metrics, finished_at,
                                 updated_at, cancelled)
    SELECT d.run_id, pg_backend_pid() % 16, d.done, d.failed, d.total,
           d.metrics, CASE WHEN d.done > 0 OR d.failed > 0 OR d.cancelled > 0 THEN $1::float8 END,
           NULL::float8, d.cancelled
    FROM d ORDER BY d.run_id
    ON CONFLICT (run_id, shard) DO UPDATE
    SET done = s.done + excluded.done, failed = s.failed + excluded.failed,
        total = s.total + excluded.total, cancelled = s.cancelled + excluded.cancelled,
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
