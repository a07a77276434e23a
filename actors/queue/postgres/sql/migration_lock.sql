-- Serialise migrations of one database across processes, until this transaction ends
-- ($1: the key, "actors" in ASCII).
SELECT pg_advisory_xact_lock($1)
