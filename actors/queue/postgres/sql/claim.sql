-- Lease up to $2 pending jobs available at $1, in `jobs_claim`'s order, skipping every row
-- another transaction holds. Under READ COMMITTED a row locked by another claimer is skipped,
-- never handed out twice. (A subquery that does not lock its rows lets two claimers pick the
-- same pending row, and the outer UPDATE, re-checking only `id` after the first commits,
-- leases it again.) $3 the lease's expiry, $4 the worker, $5 the claim's random prefix: a
-- lease token is that prefix and the job's id, unique to the lease; $6 the lease's owner
-- (`lease_owner`); $7 whether the jobs count as started at once (`started_at`). Nothing at all
-- while any control is stored (a pause, a weight, a limit): `claim_fair.sql` serves the queue
-- then. The check is uncorrelated (one probe per claim, not a filter of each row).
-- It commits without waiting for its WAL flush (`synchronous_commit` off for its own
-- transaction): a claim promises nothing to anyone but its caller. A server crash may forget
-- the claims of its last moments: their jobs are pending again and their holders' renewals
-- and acks are refused (fencing), as when a lease expires; whatever commits after a claim and
-- saw it (an ack, a renewal, a cancel) flushes it first.
WITH claim AS (
    SELECT id FROM jobs
    WHERE status = 'pending' AND available_at <= $1
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
