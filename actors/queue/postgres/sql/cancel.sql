-- Cancel the jobs of $2 (ids) at $1 (now), only those of tenant $3 (NULL: any): a pending job
-- ends `cancelled` at once; a leased one is marked (`cancel_requested_at`) and ends `cancelled`
-- when its holder next calls or its lease expires. A job already finished, cancelled or marked is
-- left alone. The cancelled jobs are counted in this connection's shard rows in the statement,
-- and a marked lease NOTIFYs channel $4 with $5 (this queue's origin). Returns the jobs it
-- changed (then a count to ignore).
WITH changed AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.status = 'pending' THEN 'cancelled' ELSE j.status END,
        finished_at = CASE WHEN j.status = 'pending' THEN $1 ELSE j.finished_at END,
        cancel_requested_at = $1, updated_at = $1
    WHERE j.id = ANY($2::bigint[]) AND j.status IN ('pending', 'leased')
      AND j.cancel_requested_at IS NULL AND ($3::text IS NULL OR j.tenant_id = $3)
    RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
              j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
              j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
              j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin,
              j.cancel_requested_at
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
SELECT j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
       j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
       j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
       j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin,
       j.cancel_requested_at,
       (SELECT count(*) FROM notified)
FROM changed j
