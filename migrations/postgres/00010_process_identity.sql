-- Crash recovery without waiting out a lease (issue 30): the scheduler lease
-- and the agent registry record which process holds them — machine, pid
-- namespace, boot ID, pid and start time (internal/procid) — so that a
-- restarted scheduler or agent of the same machine can tell for sure that
-- its predecessor is gone (not merely that its pid is free: pids are reused)
-- and take over at once. Empty: written by an earlier version, or unknown;
-- the lease is then waited out as before.

-- +goose Up
ALTER TABLE control ADD COLUMN process text NOT NULL DEFAULT '';
ALTER TABLE agent ADD COLUMN process text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE agent DROP COLUMN process;
ALTER TABLE control DROP COLUMN process;
