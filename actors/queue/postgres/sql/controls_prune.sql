-- Delete the rows that control nothing: an unused table stays empty.
DELETE FROM queue_controls
WHERE NOT paused AND weight = 1 AND max_leased IS NULL AND max_per_second IS NULL
