-- Delete the jobs of the origins $1 whose updated_at is still the one at the same place in $2
-- (nothing changed them since they were imported: every verb that changes a job sets it), or
-- whatever they are when $3 (forced); return each deleted job.
DELETE FROM jobs AS j
USING unnest($1::text[], $2::float8[]) AS d(origin, updated_at)
WHERE j.origin = d.origin AND ($3 OR j.updated_at = d.updated_at)
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
