-- Record version $1 (after version_clear.sql, in the same transaction).
INSERT INTO schema_version (version) VALUES ($1)
