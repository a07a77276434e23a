-- Delete the job of origin $1 while its updated_at is still $3 (nothing changed it since it
-- was imported: every verb that changes a job sets it), or whatever it is when $2 (forced).
DELETE FROM jobs AS j WHERE origin = $1 AND ($2 OR updated_at = $3)
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin
