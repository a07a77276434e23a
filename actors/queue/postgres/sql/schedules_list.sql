-- Every schedule of tenant $1 (NULL: of every tenant), by tenant and name.
SELECT tenant_id, name, cron, interval_seconds, timezone, r2_key, payload, priority, missed,
       grace_seconds, next_tick_at, last_tick_at, created_at, updated_at
FROM schedules WHERE $1::text IS NULL OR tenant_id = $1
ORDER BY tenant_id, name
