-- SQLite's `schedules` step (its migration 8): one row per recurring job of a tenant. A firing
-- round locks the due rows (FOR UPDATE SKIP LOCKED), moves `next_tick_at` past the ticks it
-- enqueues and enqueues their jobs, all in one transaction: a tick enqueues one job however
-- many processes share the queue.
-- migrate:drops schedules

-- migrate:up
CREATE TABLE schedules (
    tenant_id        text             NOT NULL,
    name             text             NOT NULL,
    cron             text,
    interval_seconds bigint,
    timezone         text             NOT NULL DEFAULT 'UTC',
    r2_key           text             NOT NULL,
    payload          text,
    priority         integer          NOT NULL DEFAULT 0,
    missed           text             NOT NULL DEFAULT 'catch_up'
                     CHECK (missed IN ('catch_up', 'skip')),
    grace_seconds    double precision NOT NULL,
    next_tick_at     double precision NOT NULL,
    last_tick_at     double precision,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    PRIMARY KEY (tenant_id, name),
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL))
);
CREATE INDEX schedules_due ON schedules (next_tick_at);

-- migrate:down
DROP TABLE schedules;
