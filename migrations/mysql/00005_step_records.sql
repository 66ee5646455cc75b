-- Step records: what a step changed outside the state database, written
-- before it changes it, so that any agent can undo it later (a source's
-- original grants before writes are blocked; what an import created at the
-- destination). One record per row and kind; the body is JSON.
--
-- Agent endpoints: how other agents reach this host's database servers
-- (JSON object engine -> host:port), for the destination checks made from
-- the source and for rollback.

-- +goose Up
CREATE TABLE migration_record (
    migration_id BIGINT NOT NULL,
    kind         VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    body         MEDIUMTEXT NOT NULL,
    owner        VARCHAR(255) NOT NULL,
    fence        BIGINT NOT NULL,
    updated_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (migration_id, kind),
    CONSTRAINT migration_record_kind CHECK (kind REGEXP '^[a-z][a-z0-9_-]{0,31}$'),
    CONSTRAINT migration_record_migration FOREIGN KEY (migration_id) REFERENCES migration (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
ALTER TABLE agent ADD COLUMN endpoints VARCHAR(2048) NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE agent DROP COLUMN endpoints;
DROP TABLE migration_record;
