-- A run's state: its `runs` row (the base) plus its `run_counts` shards, with its leased jobs
-- counted when read (only those in flight, through `jobs_leased`). A run is finished while none
-- of its jobs is unfinished; `finished_at` is then the latest time one of them finished, and
-- closing the run counts as updating it (as in SQLite). Columns: `summary_from_row`'s order,
-- then total and seq. It has no WHERE clause: `actors.queue.migrate` reads it as a subquery or
-- adds its own; runs.sql is this query filtered by parameters.
SELECT r.run_id, r.tenant_id, r.created_at,
       greatest(r.updated_at, c.updated_at,
                CASE WHEN r.done + c.done + r.failed + c.failed + r.cancelled + c.cancelled
                         >= r.total + c.total
                     THEN greatest(r.finished_at, c.finished_at) END) AS updated_at,
       CASE WHEN r.done + c.done + r.failed + c.failed + r.cancelled + c.cancelled
                         >= r.total + c.total
            THEN greatest(r.finished_at, c.finished_at) END AS finished_at,
       CASE WHEN c.metrics IS NOT TRUE THEN r.metrics ELSE (
           SELECT jsonb_object_agg(m.key, m.value)::text FROM (
               SELECT e.key, sum(e.value::float8) AS value FROM (
                   SELECT * FROM jsonb_each_text(r.metrics::jsonb)
                   UNION ALL
                   SELECT x.* FROM run_counts s, jsonb_each_text(s.metrics) AS x
                   WHERE s.run_id = r.run_id AND s.metrics IS NOT NULL
               ) e GROUP BY e.key
           ) m) END AS metrics,
       r.total + c.total - r.done - c.done - r.failed - c.failed - r.cancelled - c.cancelled
               - coalesce(l.leased, 0)
           AS pending,
       coalesce(l.leased, 0) AS leased, r.done + c.done AS done,
       r.failed + c.failed AS failed, r.cancelled + c.cancelled AS cancelled,
       r.total + c.total AS total, r.seq
FROM runs r
CROSS JOIN LATERAL (
    SELECT coalesce(sum(s.done), 0)::bigint AS done,
           coalesce(sum(s.failed), 0)::bigint AS failed,
           coalesce(sum(s.cancelled), 0)::bigint AS cancelled,
           coalesce(sum(s.total), 0)::bigint AS total, max(s.finished_at) AS finished_at,
           max(s.updated_at) AS updated_at,
           bool_or(s.metrics IS NOT NULL) AS metrics
    FROM run_counts s WHERE s.run_id = r.run_id
) c
-- The leases in flight, read once per query (not per run) through `jobs_leased`.
LEFT JOIN (
    SELECT run_id, count(*) AS leased FROM jobs WHERE status = 'leased' GROUP BY run_id
) l ON l.run_id = r.run_id
