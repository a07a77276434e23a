-- Wake the processes that LISTEN on channel $1; $2 names the sender (its origin).
SELECT pg_notify($1, $2)
