-- The fair claim: lease up to $2 jobs available at $1, tenants in turns. Parameters 1-7 as in
-- claim.sql; $8 the claimer's cursor (the last tenant its previous claim served; '' for none),
-- $9 whether turns are fair (else the global order of claim.sql over the tenants' first jobs),
-- $10 the tenants with limits that this transaction has locked (`controls_lock.sql`), the
-- only ones with limits it may serve, $11 whether to lease nothing while a lease has expired
-- (as claim_first.sql).
--
-- One tenant with pending jobs and no control stored (`gate`): its turn is the whole claim,
-- which is then claim.sql's, through that tenant's entries of `jobs_tenant_claim` (the
-- `single` branch of `claim`; without the tenant's id the planner sorted the whole backlog). Otherwise `walk` visits the
-- tenants with pending jobs from the one after the cursor, wrapping around to the cursor
-- itself, one seek of `jobs_tenant_claim` each, and stops once the first turn is full: each
-- tenant's share of a turn is its `weight` (fair) of jobs, no more than it has available nor
-- than its quota allows (its limits: live leases, its rate bucket); a paused tenant (or
-- every tenant, the queue paused) has none. A pull of one job reads one tenant, whatever
-- the number of tenants. Not fair, the walk reads every tenant (the global order needs each
-- one's first jobs). If the walk ran out of tenants before the first turn was full, every
-- tenant offers its first `weight * rounds` jobs (enough rounds to fill the claim were every
-- tenant full), numbered in its own order (priority, then age); the claim takes turn 0 of
-- every tenant in the walk's order, then turn 1, ... Only the counts per tenant come out of
-- that (`pick`); the rows are then locked tenant by tenant with SKIP LOCKED, so two claimers
-- never wait for each other and never lease one job twice. The ids go to the UPDATE as one
-- array (an index probe each, whatever the planner guesses of their number). Like claim.sql,
-- it does not wait for its WAL flush (nor, in a limited claim's transaction, does the rest).
WITH RECURSIVE gate AS MATERIALIZED (
    SELECT (SELECT min(tenant_id) FROM jobs WHERE status = 'pending') AS tenant,
           NOT EXISTS (SELECT 1 FROM queue_controls)
           AND (SELECT min(tenant_id) FROM jobs WHERE status = 'pending')
               = (SELECT max(tenant_id) FROM jobs WHERE status = 'pending') AS single,
           ($11 AND EXISTS (SELECT 1 FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1))
           OR EXISTS (SELECT 1 FROM queue_controls q WHERE q.tenant_id = '' AND q.paused)
               AS blocked
),
walk(tenant_id, wrapped, n, served, weight, quota, ready) AS (
    -- Before the first tenant: the cursor (never a tenant's id when '').
    SELECT $8::text, false, 0, 0, 0, 0, 0
    FROM gate WHERE NOT gate.single AND NOT gate.blocked
    UNION ALL
    SELECT nx.tenant_id, nx.wrapped, w.n + 1, w.served + r.ready, q.weight::int, q.quota::int,
           r.ready
    FROM walk w
    -- The next tenant with pending jobs after this one; past the last, the first of all
    -- (wrapped), and in the wrapped part none after the cursor.
    CROSS JOIN LATERAL (
        SELECT t.tenant_id, t.wrapped FROM (
            (SELECT j.tenant_id, w.wrapped AS wrapped FROM jobs j
             WHERE j.status = 'pending' AND j.tenant_id > w.tenant_id
             ORDER BY j.tenant_id LIMIT 1)
            UNION ALL
            (SELECT j.tenant_id, true FROM jobs j
             WHERE NOT w.wrapped AND j.status = 'pending'
             ORDER BY j.tenant_id LIMIT 1)
        ) t
        WHERE NOT t.wrapped OR t.tenant_id <= $8
        LIMIT 1
    ) nx
    CROSS JOIN LATERAL (
        SELECT CASE WHEN $9 THEN coalesce(c.weight, 1) ELSE 1 END AS weight,
               CASE WHEN coalesce(c.paused, false)
                         OR ((c.max_leased IS NOT NULL OR c.max_per_second IS NOT NULL)
                             AND NOT nx.tenant_id = ANY($10))
                    THEN 0
                    ELSE least(
                        $2,
                        CASE WHEN c.max_leased IS NULL THEN $2 ELSE c.max_leased - (
                            SELECT count(*) FROM jobs l
                            WHERE l.status = 'leased' AND l.lease_expires_at > $1
                              AND l.tenant_id = nx.tenant_id)::int END,
                        CASE WHEN c.max_per_second IS NULL THEN $2 ELSE floor(least(
                            greatest(1, c.max_per_second),
                            c.rate_tokens + ($1 - c.rate_at) * c.max_per_second))::int END)
               END AS quota
        FROM (SELECT 1) AS one LEFT JOIN queue_controls c ON c.tenant_id = nx.tenant_id
    ) q
    -- How many of its jobs the tenant has available for its first turn.
    CROSS JOIN LATERAL (
        SELECT count(*)::int AS ready FROM (
            SELECT 1 FROM jobs a
            WHERE a.status = 'pending' AND a.tenant_id = nx.tenant_id AND a.available_at <= $1
            LIMIT greatest(0, least(q.quota, q.weight))
        ) x
    ) r
    -- A bound the planner cannot see through (an InitPlan): with it the generic plan costs what
    -- a custom one does, so the prepared statement keeps one plan instead of planning each call.
    WHERE w.served < (SELECT CASE WHEN $9 THEN $2 ELSE 2147483647 END)
),
eligible AS (
    SELECT tenant_id, n, weight, quota FROM walk WHERE n > 0 AND ready > 0
),
per AS (
    -- Fair: one turn if the walk filled it, else enough turns for every tenant it found.
    SELECT CASE WHEN NOT $9 THEN $2
                WHEN max(served) >= $2 THEN 1
                ELSE ceil($2::float8 / greatest(1, sum(weight) FILTER (WHERE ready > 0)))::int
           END AS rounds
    FROM walk
),
offered AS (
    SELECT e.tenant_id, e.n, e.weight, f.rn, f.priority, f.available_at, f.id
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
        ORDER BY CASE WHEN $9 THEN (rn - 1) / weight END, CASE WHEN $9 THEN n END,
                 priority DESC, available_at, id
        LIMIT $2
    ) s GROUP BY tenant_id
),
claim AS (
    SELECT s.id FROM (
        SELECT id FROM jobs
        WHERE status = 'pending' AND available_at <= $1
          AND tenant_id = (SELECT tenant FROM gate WHERE single AND NOT blocked)
        ORDER BY priority DESC, available_at, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) s
    UNION ALL
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
  AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
          j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
          j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
          j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
