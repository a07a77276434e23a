-- SQLite's `maintenance` step: one row per task, claimed round by round with one conditional
-- UPDATE, so processes sharing the queue do each round once.

-- migrate:up
CREATE TABLE maintenance (
    task       text             PRIMARY KEY,
    due_at     double precision NOT NULL,
    rounds     bigint           NOT NULL DEFAULT 0,
    claimed_by text,
    claimed_at double precision
);

-- migrate:down
DROP TABLE maintenance;
