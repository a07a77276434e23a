-- The jobs that hold the idempotency keys $2 of the tenants $1 (pairwise).
SELECT j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
FROM jobs j
JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, idempotency_key)
  ON j.tenant_id = k.tenant_id AND j.idempotency_key = k.idempotency_key
