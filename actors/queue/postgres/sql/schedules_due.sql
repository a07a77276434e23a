-- Lock up to $2 schedules due at $1 (now), earliest first, skipping those another firing round
-- holds: that round moves them past now before it commits.
SELECT tenant_id, name, cron, interval_seconds, timezone, r2_key, payload, priority, missed,
       grace_seconds, next_tick_at, last_tick_at, created_at, updated_at
FROM schedules WHERE next_tick_at <= $1
ORDER BY next_tick_at LIMIT $2
FOR UPDATE SKIP LOCKED
