-- The statement that creates schema $1 unless it exists (an identifier cannot be a parameter:
-- format's %I quotes it).
SELECT format('CREATE SCHEMA IF NOT EXISTS %I', $1::text)
