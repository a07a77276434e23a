-- Give back each live lease of $3 (ids) under $4 (their tokens): the job is pending again
-- $2 seconds after $1 (now), with its attempt back. A job whose cancellation was requested ends
-- `cancelled` instead, counted in this connection's shard rows in the same statement.
WITH released AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
        attempts = j.attempts - 1, available_at = $1 + $2,
        finished_at = CASE WHEN j.cancel_requested_at IS NOT NULL THEN $1 END,
        lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
        lease_owner = NULL, started_at = NULL, updated_at = $1
    FROM unnest($3::bigint[], $4::text[]) AS a(id, token)
    WHERE j.id = a.id
      AND j.status = 'leased' AND j.lease_token = a.token AND j.lease_expires_at > $1
    RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
              j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
              j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
              j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin,
              j.cancel_requested_at
),
d AS (
    SELECT run_id, 0::bigint AS done, 0::bigint AS failed, 0::bigint AS total,
           NULL::jsonb AS metrics, count(*) AS cancelled
    FROM released WHERE status = 'cancelled' GROUP BY run_id
),
-- add_counts.sql's insert (with the cancelled jobs): this connection's shard rows, not touched.
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
SELECT j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
       j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
       j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
       j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin,
       j.cancel_requested_at
FROM released j
