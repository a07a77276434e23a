-- Whether the current schema records a version (holds a queue).
SELECT to_regclass('schema_version') IS NOT NULL
