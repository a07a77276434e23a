-- A task's first claim creates its row (and wins the round). Parameters as in
-- maintenance_claim.sql.
INSERT INTO maintenance (task, due_at, rounds, claimed_by, claimed_at)
VALUES ($1, $2::float8 + $3::float8, 1, $4, $2)
ON CONFLICT (task) DO NOTHING
RETURNING rounds, due_at
