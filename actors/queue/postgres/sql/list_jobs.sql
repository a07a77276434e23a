-- One page of jobs in id order: ids after $1, status $2, run $3, tenant $4 (each NULL: any),
-- at most $5. A run's jobs are read by id from the run's first_id (no index on the jobs' run);
-- a run that does not exist has none (9223372036854775807: above every id).
SELECT j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
FROM jobs j
WHERE id > CASE WHEN $3::text IS NULL THEN $1 ELSE greatest($1, coalesce(
    (SELECT first_id - 1 FROM runs WHERE run_id = $3), 9223372036854775807)) END
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR run_id = $3) AND ($4::text IS NULL OR tenant_id = $4)
ORDER BY id LIMIT $5
