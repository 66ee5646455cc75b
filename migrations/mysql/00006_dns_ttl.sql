-- DNS TTL preparation: `migrate dns lower-ttl` lowers the TTL of planned
-- rows' names ahead of the migration night and records here what it was;
-- `migrate dns restore-ttl` puts it back after Done. One row per name
-- (normalised, without the trailing dot). A name lowered again after a
-- restore starts a new record.

-- +goose Up
CREATE TABLE dns_ttl (
    name         VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    original_ttl BIGINT NOT NULL,
    lowered_ttl  BIGINT NOT NULL,
    lowered_at   DATETIME(6) NOT NULL,
    lowered_by   VARCHAR(255) NOT NULL,
    restored_at  DATETIME(6) NULL,
    CONSTRAINT dns_ttl_values CHECK (original_ttl >= 0 AND lowered_ttl >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE dns_ttl;
