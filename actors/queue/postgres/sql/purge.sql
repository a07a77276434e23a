-- Delete the jobs that finished at or before $1; return each one's run and status.
DELETE FROM jobs WHERE finished_at <= $1 AND status IN ('done', 'failed', 'cancelled')
RETURNING run_id, status
