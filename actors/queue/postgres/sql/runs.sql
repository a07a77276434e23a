-- Run states (run_state.sql's query, columns and all), filtered: $1 one run (or NULL: any),
-- $2 runs created after this `seq`, $3 one tenant (or NULL: any), $4 only runs left with no
-- job that finished at or before this time (or NULL: any); at most $5 (NULL: all), in creation
-- order.
SELECT * FROM (
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
    LEFT JOIN (
        SELECT run_id, count(*) AS leased FROM jobs WHERE status = 'leased' GROUP BY run_id
    ) l ON l.run_id = r.run_id
    WHERE ($1::text IS NULL OR r.run_id = $1) AND r.seq > $2
      AND ($3::text IS NULL OR r.tenant_id = $3)
) s
WHERE $4::float8 IS NULL OR (s.total = 0 AND s.finished_at <= $4)
ORDER BY s.seq LIMIT $5
