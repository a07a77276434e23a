-- Return failed jobs to pending with attempts reset, at $1 (now): those of $2 (ids, or NULL:
-- any), of run $3 (or NULL: any; its jobs found by id from the run's first_id), of tenant $4
-- (or NULL: any). Returns each requeued job's run.
UPDATE jobs
SET status = 'pending', attempts = 0, available_at = $1, finished_at = NULL,
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
    lease_owner = NULL, started_at = NULL, updated_at = $1
WHERE status = 'failed'
  AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
  AND ($3::text IS NULL OR run_id = $3)
  AND id >= coalesce((SELECT first_id FROM runs WHERE run_id = $3), 0)
  AND ($4::text IS NULL OR tenant_id = $4)
RETURNING run_id
