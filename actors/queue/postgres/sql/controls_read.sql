-- Every stored control, the whole queue's row ('') first.
SELECT tenant_id, paused, weight, max_leased, max_per_second, rate_tokens, rate_at
FROM queue_controls ORDER BY tenant_id
