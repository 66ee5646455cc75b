-- Scheduler support: paused source hosts, the running scheduler's
-- --max-procs (shown by `migrate status`), and indexes for the scheduler's
-- queries.

-- +goose Up
-- `migrate pause-source H`: the scheduler promotes no rows from a paused host.
CREATE TABLE source_pause (
    host      text PRIMARY KEY,
    paused_by text NOT NULL,
    reason    text NOT NULL DEFAULT '',
    since     timestamptz NOT NULL
);

-- the running scheduler's --max-procs, on its 'scheduler' row
ALTER TABLE control ADD COLUMN max_procs integer CHECK (max_procs > 0);

-- the distinct source hosts with Waiting rows, found by a loose index scan
CREATE INDEX migration_status_source ON migration (status, source);
-- failures and completions within a time window (automatic trip, status)
CREATE INDEX migration_event_created ON migration_event (created_at);

-- +goose Down
DROP INDEX migration_event_created;
DROP INDEX migration_status_source;
ALTER TABLE control DROP COLUMN max_procs;
DROP TABLE source_pause;
