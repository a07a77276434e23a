-- The tenants with limits (read now and then by each claimer, to know whether to lock).
SELECT tenant_id FROM queue_controls
WHERE max_leased IS NOT NULL OR max_per_second IS NOT NULL
ORDER BY tenant_id
