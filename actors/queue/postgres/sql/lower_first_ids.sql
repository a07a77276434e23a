-- Lower each run of $1 to the first id in $2 where its `first_id` is above it (a run another
-- transaction created meanwhile may have been given a first_id above this batch's ids).
UPDATE runs SET first_id = d.first_id
FROM unnest($1::text[], $2::bigint[]) AS d(run_id, first_id)
WHERE runs.run_id = d.run_id AND runs.first_id > d.first_id
