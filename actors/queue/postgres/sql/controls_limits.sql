-- Set tenant $1's weight $2, max_leased $3 and max_per_second $4 (NULL: no limit) at $5 (now);
-- its rate bucket starts full (max(1, rate) tokens).
INSERT INTO queue_controls (tenant_id, weight, max_leased, max_per_second, rate_tokens, rate_at,
                            updated_at)
VALUES ($1, $2, $3, $4::float8, greatest(1, $4::float8), $5, $5)
ON CONFLICT (tenant_id) DO UPDATE SET
    weight = excluded.weight, max_leased = excluded.max_leased,
    max_per_second = excluded.max_per_second, rate_tokens = excluded.rate_tokens,
    rate_at = excluded.rate_at, updated_at = excluded.updated_at
