-- The schema's version (0: none recorded).
SELECT coalesce(max(version), 0) FROM schema_version
