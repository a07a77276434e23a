-- The queue's counts at $1 (now), in one snapshot: the stored run counts (each run's base and
-- count shards), the leased jobs (those in flight) counted through their partial index, and the
-- scheduled jobs and the earliest available one from a loose index scan of `jobs_claim
-- (priority DESC, available_at, id) WHERE status = 'pending'`: a max() seek per distinct
-- priority, then per priority the range after $1 (the scheduled jobs only) counted and the
-- first entry up to $1 read, so the backlog itself is never scanned.
WITH RECURSIVE levels(priority) AS (
    SELECT max(priority) FROM jobs WHERE status = 'pending'
    UNION ALL
    SELECT (SELECT max(priority) FROM jobs
            WHERE status = 'pending' AND priority < l.priority)
    FROM levels l WHERE l.priority IS NOT NULL
),
backlog AS (
    SELECT coalesce(sum((SELECT count(*) FROM jobs WHERE status = 'pending'
                         AND priority = l.priority AND available_at > $1)), 0)
               AS scheduled,
           min((SELECT min(available_at) FROM jobs WHERE status = 'pending'
                AND priority = l.priority AND available_at <= $1)) AS oldest
    FROM levels l WHERE l.priority IS NOT NULL
)
SELECT coalesce(sum(total), 0), coalesce(sum(done), 0), coalesce(sum(failed), 0),
       (SELECT count(*) FROM jobs WHERE status = 'leased'),
       (SELECT scheduled FROM backlog), (SELECT oldest FROM backlog),
       coalesce(sum(cancelled), 0)
FROM (SELECT total, done, failed, cancelled FROM runs
      UNION ALL SELECT total, done, failed, cancelled FROM run_counts) c
