-- The tenant of each run of $1 that exists.
SELECT run_id, tenant_id FROM runs WHERE run_id = ANY($1)
