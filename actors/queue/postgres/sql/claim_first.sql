-- claim.sql for a pull's first try: it leases nothing while a lease has expired (then the pull
-- reaps and claims with claim.sql), so it never passes over a job the reap frees. Parameters
-- as in claim.sql; like it, it does not wait for its WAL flush.
WITH claim AS (
    SELECT id FROM jobs
    WHERE status = 'pending' AND available_at <= $1 AND NOT EXISTS (
        SELECT 1 FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1)
      AND NOT EXISTS (SELECT 1 FROM queue_controls)
    ORDER BY priority DESC, available_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET status = 'leased', attempts = j.attempts + 1,
    lease_token = $5 || j.id::text,
    lease_expires_at = $3, worker_id = $4, lease_owner = $6,
    started_at = CASE WHEN $7 THEN $1 END, updated_at = $1
FROM claim WHERE j.id = claim.id
  AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
