-- How many schedules tenant $1 has besides one named $2 (the per-tenant bound).
SELECT count(*) FROM schedules WHERE tenant_id = $1 AND name <> $2
