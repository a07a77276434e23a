-- The table that records the schema's version: one row, the latest migration applied.
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)
