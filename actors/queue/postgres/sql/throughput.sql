-- The jobs done and failed per minute since $1 (a range of jobs_finished), oldest first.
-- Columns: the minute's number (finished_at / 60, rounded down), done, failed.
SELECT floor(finished_at / 60)::bigint AS minute,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM jobs WHERE finished_at >= $1
GROUP BY 1 ORDER BY 1
