-- Delete schedule $2 of tenant $1 and return it (no row: there is none).
DELETE FROM schedules WHERE tenant_id = $1 AND name = $2
RETURNING tenant_id, name, cron, interval_seconds, timezone, r2_key, payload, priority, missed,
          grace_seconds, next_tick_at, last_tick_at, created_at, updated_at
