-- Delete the runs of $1 and their count shards.
WITH counts AS (DELETE FROM run_counts WHERE run_id = ANY($1::text[]))
DELETE FROM runs WHERE run_id = ANY($1::text[])
