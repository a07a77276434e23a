-- Insert a batch of jobs, create the runs it names for the first time, add the new jobs to
-- the runs' counts (this connection's shard rows), and NOTIFY other processes: one statement.
-- The batch is one JSON parameter (one decode on the server instead of nine arrays encoded
-- item by item); identity values are drawn in input order (ORDER BY a.n), so the inserted ids
-- sorted line up with the inputs that were not idempotent repeats. Without idempotency keys it
-- is a plain insert (ON CONFLICT's speculative insertion costs every row): enqueue_keyed.sql is
-- the form with keys.
-- $1 now, $2 the jobs (JSON), $3 the NOTIFY channel, $4 its payload (this queue's origin),
-- $5 and $6 the runs and tenants the guard checks (empty arrays inside a transaction).
WITH new AS (
    INSERT INTO jobs AS j (run_id, tenant_id, r2_key, payload, max_attempts, priority,
                           available_at, idempotency_key, created_at, updated_at,
                           cross_tenant_key, timeout_seconds)
    SELECT a.run_id, a.tenant_id, a.r2_key, a.payload::text, a.max_attempts,
           coalesce(a.priority, 0), $1 + coalesce(a.delay, 0), a.idempotency_key,
           $1, $1, coalesce(a.cross_tenant_key, false), a.timeout_seconds
    FROM ROWS FROM (json_to_recordset($2::json)
             AS (run_id text, tenant_id text, r2_key text, payload json,
                 max_attempts int, priority int, delay float8,
                 idempotency_key text, cross_tenant_key bool,
                 timeout_seconds float8))
         WITH ORDINALITY AS a(run_id, tenant_id, r2_key, payload, max_attempts,
                              priority, delay, idempotency_key, cross_tenant_key,
                              timeout_seconds, n)
    ORDER BY a.n
    RETURNING j.id, j.run_id, j.tenant_id, j.idempotency_key
),
created AS (
    INSERT INTO runs AS r (run_id, tenant_id, created_at, updated_at, first_id)
    SELECT run_id, min(tenant_id), $1, $1, min(id) FROM new
    GROUP BY run_id ORDER BY run_id
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
),
d AS (
    SELECT run_id, 0::bigint AS done, 0::bigint AS failed, count(*) AS total,
           NULL::jsonb AS metrics, min(id) AS first_id
    FROM new GROUP BY run_id
),
-- A run whose first_id is above the batch's ids (one `store migrate` created with no job yet)
-- is lowered; any other run is only read (its first_id is lower).
lowered AS (
    UPDATE runs AS r SET first_id = d.first_id FROM d
    WHERE r.run_id = d.run_id AND r.first_id > d.first_id
    RETURNING 1
),
-- add_counts.sql's insert: this connection's shard rows, touched.
counted AS (
    INSERT INTO run_counts AS s (run_id, shard, done, failed, total, metrics, finished_at,
                                 updated_at)
    SELECT d.run_id, pg_backend_pid() % 16, d.done, d.failed, d.total,
           d.metrics, CASE WHEN d.done > 0 OR d.failed > 0 THEN $1::float8 END,
           $1::float8
    FROM d ORDER BY d.run_id
    ON CONFLICT (run_id, shard) DO UPDATE
    SET done = s.done + excluded.done, failed = s.failed + excluded.failed,
        total = s.total + excluded.total,
        metrics = CASE WHEN excluded.metrics IS NULL THEN s.metrics
                       WHEN s.metrics IS NULL THEN excluded.metrics ELSE (
            SELECT jsonb_object_agg(k, coalesce((s.metrics ->> k)::float8, 0)
                                       + coalesce((excluded.metrics ->> k)::float8, 0))
            FROM jsonb_object_keys(s.metrics || excluded.metrics) AS k) END,
        finished_at = coalesce(excluded.finished_at, s.finished_at),
        updated_at = coalesce(excluded.updated_at, s.updated_at)
    RETURNING 1
),
notified AS (SELECT pg_notify($3, $4))
SELECT new.id, new.run_id, new.tenant_id, new.idempotency_key,
       (SELECT count(*) FROM notified),
       -- The tenant guard: a run of $5 (with its tenant in $6) that this statement did not
       -- create and that its snapshot does not show held by that tenant (another tenant's
       -- run, or one another transaction created meanwhile) fails the statement with this
       -- message, so nothing is written. Empty arrays: no guard.
       CASE WHEN EXISTS (
           SELECT 1 FROM unnest($5::text[], $6::text[]) AS p(run_id, tenant_id)
           WHERE NOT EXISTS (SELECT 1 FROM created c WHERE c.run_id = p.run_id)
             AND NOT EXISTS (SELECT 1 FROM runs r
                             WHERE r.run_id = p.run_id AND r.tenant_id = p.tenant_id))
       THEN (new.run_id || 'actors: run tenant mismatch')::int END
FROM new
