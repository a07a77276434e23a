-- Claim the ticks of schedule $2 of tenant $1 that were due from $3 (its next tick as read):
-- its next tick becomes $4, its last enqueued tick $5 (NULL: unchanged), at $6 (now). No row
-- changed: another round claimed them first.
UPDATE schedules
SET next_tick_at = $4, last_tick_at = coalesce($5, last_tick_at), updated_at = $6
WHERE tenant_id = $1 AND name = $2 AND next_tick_at = $3
