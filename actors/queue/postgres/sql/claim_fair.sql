-- The fair claim: lease up to $2 jobs available at $1, tenants in turns. Parameters 1-7 as in
-- claim.sql; $8 the claimer's cursor (the last tenant its previous claim served; '' for none),
-- $9 whether turns are fair (else the global order of claim.sql over the tenants' first jobs),
-- $10 the tenants with limits that this transaction has locked (`controls_lock.sql`), the
-- only ones with limits it may serve, $11 whether to lease nothing while a lease has expired
-- (as claim_first.sql).
--
-- `tenants` walks the tenants with pending jobs (a loose scan of `jobs_tenant_claim`: one seek
-- each); `shares` leaves out those with no job available yet and paused ones (or all, the
-- queue paused) and gives each its quota
-- (its limits: live leases, its rate bucket) and weight. Fair: each tenant offers its first
-- `weight * rounds` jobs (enough rounds to fill the claim were every tenant full), numbered in
-- its own order (priority, then age); the claim takes round 0 of every tenant (after the
-- cursor first, then wrapping around), then round 1, ... Only the counts per tenant come out
-- of that (`pick`); the rows are then locked tenant by tenant with SKIP LOCKED, so two
-- claimers never wait for each other and never lease one job twice. The ids go to the UPDATE
-- as one array (an index probe each, whatever the planner guesses of their number).
WITH RECURSIVE tenants(tenant_id) AS (
    (SELECT tenant_id FROM jobs WHERE status = 'pending' ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant_id FROM jobs j
            WHERE j.status = 'pending' AND j.tenant_id > t.tenant_id
            ORDER BY j.tenant_id LIMIT 1)
    FROM tenants t WHERE t.tenant_id IS NOT NULL
),
shares AS (
    SELECT t.tenant_id, t.tenant_id <= $8 AS wrapped,
           CASE WHEN $9 THEN coalesce(c.weight, 1) ELSE 1 END AS weight,
           least(
               $2,
               CASE WHEN c.max_leased IS NULL THEN $2 ELSE c.max_leased - (
                   SELECT count(*) FROM jobs l
                   WHERE l.status = 'leased' AND l.lease_expires_at > $1
                     AND l.tenant_id = t.tenant_id)::int END,
               CASE WHEN c.max_per_second IS NULL THEN $2 ELSE floor(least(
                   greatest(1, c.max_per_second),
                   c.rate_tokens + ($1 - c.rate_at) * c.max_per_second))::int END
           ) AS quota
    FROM tenants t LEFT JOIN queue_controls c ON c.tenant_id = t.tenant_id
    WHERE t.tenant_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM jobs a WHERE a.status = 'pending'
                  AND a.tenant_id = t.tenant_id AND a.available_at <= $1)
      AND NOT coalesce(c.paused, false)
      AND ((c.max_leased IS NULL AND c.max_per_second IS NULL) OR t.tenant_id = ANY($10))
      AND NOT EXISTS (SELECT 1 FROM queue_controls q WHERE q.tenant_id = '' AND q.paused)
      AND (NOT $11 OR NOT EXISTS (
          SELECT 1 FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1))
),
eligible AS (
    SELECT * FROM shares WHERE quota > 0
),
per AS (
    SELECT CASE WHEN $9 THEN ceil($2::float8 / greatest(1, sum(weight)))::int ELSE $2 END
           AS rounds
    FROM eligible
),
offered AS (
    SELECT e.tenant_id, e.wrapped, e.weight, f.rn, f.priority, f.available_at, f.id
    FROM eligible e CROSS JOIN per
    CROSS JOIN LATERAL (
        SELECT row_number() OVER (ORDER BY x.priority DESC, x.available_at, x.id) AS rn, x.*
        FROM (
            SELECT j.priority, j.available_at, j.id FROM jobs j
            WHERE j.status = 'pending' AND j.tenant_id = e.tenant_id AND j.available_at <= $1
            ORDER BY j.priority DESC, j.available_at, j.id
            LIMIT least(e.quota, CASE WHEN $9 THEN e.weight * per.rounds ELSE $2 END)
        ) x
    ) f
),
pick AS (
    SELECT tenant_id, count(*)::int AS take FROM (
        SELECT tenant_id FROM offered
        ORDER BY CASE WHEN $9 THEN (rn - 1) / weight END, CASE WHEN $9 THEN wrapped END,
                 CASE WHEN $9 THEN tenant_id END, priority DESC, available_at, id
        LIMIT $2
    ) s GROUP BY tenant_id
),
claim AS (
    SELECT c.id FROM pick p
    CROSS JOIN LATERAL (
        SELECT j.id FROM jobs j
        WHERE j.status = 'pending' AND j.tenant_id = p.tenant_id AND j.available_at <= $1
        ORDER BY j.priority DESC, j.available_at, j.id
        LIMIT p.take
        FOR UPDATE SKIP LOCKED
    ) c
)
UPDATE jobs AS j
SET status = 'leased', attempts = j.attempts + 1,
    lease_token = $5 || j.id::text,
    lease_expires_at = $3, worker_id = $4, lease_owner = $6,
    started_at = CASE WHEN $7 THEN $1 END, updated_at = $1
WHERE j.id = ANY (ARRAY(SELECT id FROM claim))
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
