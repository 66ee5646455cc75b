-- DNS TTL preparation: `migrate dns lower-ttl` lowers the TTL of planned
-- rows' names ahead of the migration night and records here what it was;
-- `migrate dns restore-ttl` puts it back after Done. One row per name
-- (normalised, without the trailing dot). A name lowered again after a
-- restore starts a new record.

-- +goose Up
CREATE TABLE dns_ttl (
    name         text PRIMARY KEY,
    original_ttl bigint NOT NULL CHECK (original_ttl >= 0),
    lowered_ttl  bigint NOT NULL CHECK (lowered_ttl >= 0),
    lowered_at   timestamptz NOT NULL,
    lowered_by   text NOT NULL,
    restored_at  timestamptz
);

-- +goose Down
DROP TABLE dns_ttl;
