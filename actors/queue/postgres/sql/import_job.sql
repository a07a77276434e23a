-- Insert one imported job unless a job has its origin already: $1 origin, $2 run, $3 tenant,
-- $4 key, $5 payload (JSON text), $6 status, $7 attempts, $8 max_attempts, $9 priority,
-- $10 available_at (now), $11 last_error, $12 result (JSON text), $13 created_at,
-- $14 updated_at, $15 finished_at, $16 cross_tenant_key. No row back: the origin is taken.
INSERT INTO jobs AS j (origin, run_id, tenant_id, r2_key, payload, status, attempts,
                       max_attempts, priority, available_at, last_error, result, created_at,
                       updated_at, finished_at, cross_tenant_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (origin) WHERE origin IS NOT NULL DO NOTHING
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin
