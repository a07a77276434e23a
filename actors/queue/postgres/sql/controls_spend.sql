-- Refill the rate buckets of tenants $1 at $3 (now) and take $2 (how many of each one's jobs
-- the claim just leased) from them.
UPDATE queue_controls AS c
SET rate_tokens = least(greatest(1, c.max_per_second),
                        c.rate_tokens + ($3 - c.rate_at) * c.max_per_second) - s.taken,
    rate_at = $3
FROM unnest($1::text[], $2::int[]) AS s(tenant_id, taken)
WHERE c.tenant_id = s.tenant_id AND c.max_per_second IS NOT NULL
