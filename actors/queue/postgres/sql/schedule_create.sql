-- Add schedule $2 of tenant $1, or replace it: $3 cron, $4 interval_seconds, $5 timezone,
-- $6 r2_key, $7 payload (JSON text), $8 priority, $9 missed, $10 grace_seconds, $11 its first
-- tick after now, $12 now. A replacement that keeps the timing keeps its next tick.
INSERT INTO schedules AS s (tenant_id, name, cron, interval_seconds, timezone, r2_key, payload,
                            priority, missed, grace_seconds, next_tick_at, created_at,
                            updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
ON CONFLICT (tenant_id, name) DO UPDATE SET
    next_tick_at = CASE
        WHEN s.cron IS NOT DISTINCT FROM excluded.cron
         AND s.interval_seconds IS NOT DISTINCT FROM excluded.interval_seconds
         AND s.timezone = excluded.timezone
        THEN s.next_tick_at ELSE excluded.next_tick_at END,
    cron = excluded.cron, interval_seconds = excluded.interval_seconds,
    timezone = excluded.timezone, r2_key = excluded.r2_key, payload = excluded.payload,
    priority = excluded.priority, missed = excluded.missed,
    grace_seconds = excluded.grace_seconds, updated_at = excluded.updated_at
RETURNING s.tenant_id, s.name, s.cron, s.interval_seconds, s.timezone, s.r2_key, s.payload,
          s.priority, s.missed, s.grace_seconds, s.next_tick_at, s.last_tick_at, s.created_at,
          s.updated_at
