-- Wake-ups (PostgreSQL LISTEN/NOTIFY, see postgres/00007_wakeups.sql):
-- MySQL and MariaDB have no equivalent, so their agents rely on polling.
-- This version exists so both dialects share version numbers.

-- +goose Up
SELECT 1;

-- +goose Down
SELECT 1;
