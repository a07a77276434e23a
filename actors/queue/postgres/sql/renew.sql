-- Extend each live lease of $3 (ids) under $4 (their tokens) to $1 + $2; $1 now. A lease is
-- live while the job is leased under that token and has not run out; a lease whose job's
-- cancellation was requested is renewed no more (refused as `cancelled`).
UPDATE jobs AS j SET lease_expires_at = $1 + $2, updated_at = $1
FROM unnest($3::bigint[], $4::text[]) AS a(id, token)
WHERE j.id = a.id
  AND j.status = 'leased' AND j.lease_token = a.token AND j.lease_expires_at > $1
  AND j.cancel_requested_at IS NULL
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
