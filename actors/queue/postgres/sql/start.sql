-- Mark the job of each live lease of $2 (ids) under $3 (their tokens) started at $1 (now),
-- unless it already is; a job whose cancellation was requested is not started (refused as
-- `cancelled`).
UPDATE jobs AS j SET started_at = coalesce(j.started_at, $1), updated_at = $1
FROM unnest($2::bigint[], $3::text[]) AS a(id, token)
WHERE j.id = a.id
  AND j.status = 'leased' AND j.lease_token = a.token AND j.lease_expires_at > $1
  AND j.cancel_requested_at IS NULL
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
