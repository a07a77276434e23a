-- Task $1's rounds so far and when the next is due.
SELECT rounds, due_at FROM maintenance WHERE task = $1
