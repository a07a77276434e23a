-- The statement that counts the rows of table $1 (an identifier cannot be a parameter:
-- format's %I quotes it).
SELECT format('SELECT count(*) FROM %I', $1::text)
