-- Every stored control's tenant and whether it has limits (read now and then by each claimer:
-- whether to take the plain claim, and which tenants' rows to lock).
SELECT tenant_id, max_leased IS NOT NULL OR max_per_second IS NOT NULL AS limited
FROM queue_controls
ORDER BY tenant_id
