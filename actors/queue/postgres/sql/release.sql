-- Give back each live lease of $3 (ids) under $4 (their tokens): the job is pending again
-- $2 seconds after $1 (now), with its attempt back.
UPDATE jobs AS j
SET status = 'pending', attempts = j.attempts - 1, available_at = $1 + $2,
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
    lease_owner = NULL, started_at = NULL, updated_at = $1
FROM unnest($3::bigint[], $4::text[]) AS a(id, token)
WHERE j.id = a.id
  AND j.status = 'leased' AND j.lease_token = a.token AND j.lease_expires_at > $1
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin
