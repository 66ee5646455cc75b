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
    migration_id bigint NOT NULL REFERENCES migration (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_-]{0,31}$'),
    body         text NOT NULL,
    -- the claim (owner, fence) that wrote it
    owner        text NOT NULL,
    fence        bigint NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (migration_id, kind)
);
ALTER TABLE agent ADD COLUMN endpoints text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE agent DROP COLUMN endpoints;
DROP TABLE migration_record;
