-- cancel.sql for every unfinished job of run $2 (its jobs found by id from the run's first_id),
-- at $1 (now), only jobs of tenant $3 (NULL: any); $4, $5 as in cancel.sql.
-- Returns each changed job's id and status.
WITH changed AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.status = 'pending' THEN 'cancelled' ELSE j.status END,
        finished_at = CASE WHEN j.status = 'pending' THEN $1 ELSE j.finished_at END,
        cancel_requested_at = $1, updated_at = $1
    WHERE j.run_id = $2 AND j.id >= coalesce((SELECT first_id FROM runs WHERE run_id = $2), 0)
      AND j.status IN ('pending', 'leased') AND j.cancel_requested_at IS NULL
      AND ($3::text IS NULL OR j.tenant_id = $3)
    RETURNING j.id, j.run_id, j.status
),
d AS (
    SELECT run_id, 0::bigint AS done, 0::bigint AS failed, 0::bigint AS total,
           NULL::jsonb AS metrics, count(*) AS cancelled
    FROM changed WHERE status = 'cancelled' GROUP BY run_id
),
-- add_counts.sql's insert (with the cancelled jobs): this connection's shard rows, touched.
counted AS (
    INSERT INTO run_counts AS s (run_id, shard, done, failed, total, metrics, finished_at,
                                 updated_at, cancelled)
    SELECT d.run_id, pg_backend_pid() % 16, d.done, d.failed, d.total,
           d.metrics, CASE WHEN d.done > 0 OR d.failed > 0 OR d.cancelled > 0 THEN $1::float8 END,
           $1::float8, d.cancelled
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
),
-- Holders of the marked leases in other processes hear of them at once (or at their next
-- renewal, which refuses a marked lease).
notified AS (
    SELECT pg_notify($4, $5) WHERE EXISTS (SELECT 1 FROM changed WHERE status = 'leased')
)
SELECT j.id, j.status, (SELECT count(*) FROM notified) FROM changed j
