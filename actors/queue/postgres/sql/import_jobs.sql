-- Insert a batch of imported jobs, each unless a job has its origin already (those come back
-- as no row): $1 now (their available_at), $2 the jobs (JSON, one object per job; a field left
-- out is NULL), in input order (ORDER BY a.n).
INSERT INTO jobs AS j (origin, run_id, tenant_id, r2_key, payload, status, attempts,
                       max_attempts, priority, available_at, last_error, result, created_at,
                       updated_at, finished_at, cross_tenant_key)
SELECT a.origin, a.run_id, a.tenant_id, a.r2_key, a.payload::text, a.status, a.attempts,
       a.max_attempts, coalesce(a.priority, 0), $1, a.last_error, a.result::text, a.created_at,
       a.updated_at, a.finished_at, coalesce(a.cross_tenant_key, false)
FROM ROWS FROM (json_to_recordset($2::json)
         AS (origin text, run_id text, tenant_id text, r2_key text, payload json, status text,
             attempts int, max_attempts int, priority int, last_error text, result json,
             created_at float8, updated_at float8, finished_at float8, cross_tenant_key bool))
     WITH ORDINALITY AS a(origin, run_id, tenant_id, r2_key, payload, status, attempts,
                          max_attempts, priority, last_error, result, created_at, updated_at,
                          finished_at, cross_tenant_key, n)
ORDER BY a.n
ON CONFLICT (origin) WHERE origin IS NOT NULL DO NOTHING
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
