-- Scheduler support: paused source hosts, the running scheduler's
-- --max-procs (shown by `migrate status`), and indexes for the scheduler's
-- queries.

-- +goose Up
-- `migrate pause-source H`: the scheduler promotes no rows from a paused host.
CREATE TABLE source_pause (
    host      VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    paused_by VARCHAR(255) NOT NULL,
    reason    TEXT NOT NULL,
    since     DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- the running scheduler's --max-procs, on its 'scheduler' row
ALTER TABLE control ADD COLUMN max_procs INT NULL,
    ADD CONSTRAINT control_max_procs CHECK (max_procs > 0);

-- the distinct source hosts with Waiting rows, found by a loose index scan
CREATE INDEX migration_status_source ON migration (status, source);
-- failures and completions within a time window (automatic trip, status)
CREATE INDEX migration_event_created ON migration_event (created_at);

-- +goose Down
DROP INDEX migration_event_created ON migration_event;
DROP INDEX migration_status_source ON migration;
ALTER TABLE control DROP CONSTRAINT control_max_procs, DROP COLUMN max_procs;
DROP TABLE source_pause;
