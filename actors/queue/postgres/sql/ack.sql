-- Record each ack's outcome under its live lease, then add each run's finished jobs to
-- this connection's count shard: one statement (one round trip, no BEGIN/COMMIT). $1 now,
-- $2 the backoff cap, $3 the backoff base, $4 the acks as one JSON array.
WITH a AS (
    SELECT * FROM json_to_recordset($4::json)
         AS a(id bigint, token text, status text, result json, error text, permanent bool,
              factor float8, metrics jsonb)
    -- Always true (the acks were checked), but it makes the planner expect a row or two
    -- instead of json_to_recordset's default hundred, so the plan is a primary-key probe per
    -- ack, rather than a generic plan (made while the table was young, then kept) that hashes
    -- a scan of the whole table into every ack.
    WHERE a.status IN ('done', 'failed')
),
acked AS (
    -- Terminal when permanent or out of attempts; else pending again after a backoff. A job
    -- whose cancellation was requested ends `cancelled` whatever the ack says, its result
    -- dropped: nothing cancelled is ever marked done.
    UPDATE jobs AS j
    SET status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN a.status = 'done' THEN 'done'
                      WHEN (a.permanent IS TRUE OR j.attempts >= j.max_attempts) THEN 'failed'
                      ELSE 'pending' END,
        result = CASE WHEN a.status = 'done' AND j.cancel_requested_at IS NULL
                      THEN a.result::text ELSE j.result END,
        available_at = CASE WHEN a.status = 'done' OR (a.permanent IS TRUE OR j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL)
            THEN j.available_at
            ELSE $1 + least($2, $3 * power(2, least(j.attempts - 1, 40))) * a.factor END,
        finished_at = CASE WHEN a.status = 'done' OR (a.permanent IS TRUE OR j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL)
            THEN $1 END,
        lease_token = CASE WHEN a.status = 'done' OR (a.permanent IS TRUE OR j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL)
            THEN j.lease_token END,
        worker_id = CASE WHEN a.status = 'done' OR (a.permanent IS TRUE OR j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL)
            THEN j.worker_id END,
        lease_owner = CASE WHEN a.status = 'done' OR (a.permanent IS TRUE OR j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL)
            THEN j.lease_owner END,
        started_at = CASE WHEN a.status = 'done' OR (a.permanent IS TRUE OR j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL)
            THEN j.started_at END,
        last_error = CASE WHEN a.status = 'done' THEN j.last_error ELSE a.error END,
        lease_expires_at = NULL, updated_at = $1
    FROM a
    -- `|| ''`: no partial index matches, so no plan scans every lease (live or dead).
    WHERE j.id = a.id AND j.status || '' = 'leased'
      AND j.lease_token = a.token AND j.lease_expires_at > $1
    RETURNING j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
              j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
              j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
              j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
),
d AS (
    SELECT g.run_id, count(*) FILTER (WHERE g.status = 'done') AS done,
           count(*) FILTER (WHERE g.status = 'failed') AS failed, 0::bigint AS total,
           count(*) FILTER (WHERE g.status = 'cancelled') AS cancelled,
           NULL::jsonb AS metrics
    FROM acked g GROUP BY g.run_id
    HAVING count(*) FILTER (WHERE g.status IN ('done', 'failed', 'cancelled')) > 0
),
-- add_counts.sql's insert (with the cancelled jobs): this connection's shard rows, touched when metrics change.
counted AS (
    INSERT INTO run_counts AS s (run_id, shard, done, failed, total, metrics, finished_at,
                                 updated_at, cancelled)
    SELECT d.run_id, pg_backend_pid() % 16, d.done, d.failed, d.total,
           d.metrics, CASE WHEN d.done > 0 OR d.failed > 0 OR d.cancelled > 0 THEN $1::float8 END,
           CASE WHEN d.metrics IS NOT NULL THEN $1::float8 END, d.cancelled
    FROM d ORDER BY d.run_id
    ON CONFLICT (run_id, shard) DO UPDATE
    SET done = s.done + excluded.done, failed = s.failed + excluded.failed,
        total = s.total + excluded.total, cancelled = s.cancelled + excluded.cancelled,
        metrics = CASE WHEN excluded.metrics IS NULL THEN s.metrics
                       WHEN s.metrics IS NULL THEN excluded.metrics ELSE (
            SELECT jsonb_object_agg(k, coalesce((s.metrics ->> k)::float8, 0)
                                       + coalesce((excluded.metrics ->> k)::float8, 0))
            FROM jsonb_object_keys(s.metrics || excluded.metrics) AS k) END,
        finished_at = coalesce(excluded.finished_at, s.finished_at),
        updated_at = coalesce(excluded.updated_at, s.updated_at)
    RETURNING 1
)
SELECT j.id, j.run_id, j.tenant_id, j.r2_key, j.payload, j.status, j.attempts,
       j.max_attempts, j.priority, j.available_at, j.lease_token, j.lease_expires_at,
       j.worker_id, j.last_error, j.result, j.idempotency_key, j.created_at, j.updated_at,
       j.finished_at, j.lease_owner, j.started_at, j.cross_tenant_key, j.timeout_seconds, j.origin, j.cancel_requested_at
FROM acked j
