-- Lock the rows of every tenant with limits, in tenant order (no deadlock between claimers),
-- for the transaction: a claim that may serve them runs alone, after the previous one
-- committed, so its counts of live leases and its rate buckets are current.
SELECT tenant_id FROM queue_controls
WHERE max_leased IS NOT NULL OR max_per_second IS NOT NULL
ORDER BY tenant_id
FOR UPDATE
