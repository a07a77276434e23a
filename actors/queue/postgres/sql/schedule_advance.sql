-- Claim the due ticks of schedules: for each ($2 tenant, $3 name, $4 its next tick as read,
-- $5 its next tick now, $6 its last enqueued tick or NULL: unchanged), at $1 (now). Returns
-- the schedules claimed; one not returned had its ticks claimed by another round first.
UPDATE schedules AS s
SET next_tick_at = a.following, last_tick_at = coalesce(a.last, s.last_tick_at), updated_at = $1
FROM unnest($2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[])
     AS a(tenant_id, name, was, following, last)
WHERE s.tenant_id = a.tenant_id AND s.name = a.name AND s.next_tick_at = a.was
RETURNING s.tenant_id, s.name
