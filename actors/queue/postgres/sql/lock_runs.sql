-- Make enqueues (which all insert into `runs`) wait for this transaction's commit.
LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE
