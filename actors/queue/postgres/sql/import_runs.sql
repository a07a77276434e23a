-- Create the runs of $1 (with the tenants $2 and creation times $3) that do not exist yet, their
-- first_id above every id (the imported jobs' ids lower it: lower_first_ids.sql); a run that
-- exists keeps its tenant and takes the earlier creation time. $4 now.
INSERT INTO runs AS r (run_id, tenant_id, created_at, updated_at, first_id)
SELECT d.run_id, d.tenant_id, d.created_at, $4, 9223372036854775807
FROM unnest($1::text[], $2::text[], $3::float8[]) AS d(run_id, tenant_id, created_at)
ORDER BY d.run_id
ON CONFLICT (run_id) DO UPDATE SET created_at = least(r.created_at, excluded.created_at)
WHERE r.tenant_id = excluded.tenant_id
