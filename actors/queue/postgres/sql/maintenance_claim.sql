-- Take round $2 + $3 of task $1 if it is due at $2 (now), for $4 (the claimer). Of two claims
-- at once, the second waits for the first's row lock, then re-checks `due_at` against the row
-- the first committed (READ COMMITTED) and updates nothing: a round is claimed once.
UPDATE maintenance
SET due_at = $2::float8 + $3::float8, rounds = rounds + 1, claimed_by = $4, claimed_at = $2
WHERE task = $1 AND due_at <= $2
RETURNING rounds, due_at
