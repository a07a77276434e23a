-- The schema that unqualified names resolve to (NULL: the search_path names none that exists).
SELECT current_schema()
