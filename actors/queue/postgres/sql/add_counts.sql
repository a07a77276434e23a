-- Add (done, failed, total) to runs' counts: $2 the runs (sorted: two batches lock shared rows
-- in the same order, so they never deadlock), $3, $4, $5 their done, failed and total deltas;
-- $1 now; $6 whether the change updates the run (`updated_at`: as in SQLite, an enqueue, a
-- requeue, new metrics); $7 the shard row to add to, or NULL for this connection's
-- (pg_backend_pid() % 16, one of migration 4's 16 slots). Finishing a job stamps the shard's
-- `finished_at`. $8 the runs' cancelled deltas.
WITH d AS (
    SELECT run_id, done, failed, total, NULL::jsonb AS metrics, cancelled
    FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $8::bigint[])
         AS d(run_id, done, failed, total, cancelled)
)
INSERT INTO run_counts AS s (run_id, shard, done, failed, total, metrics, finished_at,
                             updated_at, cancelled)
SELECT d.run_id, coalesce($7::int, pg_backend_pid() % 16), d.done, d.failed, d.total,
       d.metrics, CASE WHEN d.done > 0 OR d.failed > 0 OR d.cancelled > 0 THEN $1::float8 END,
       CASE WHEN $6 THEN $1::float8 END, d.cancelled
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
