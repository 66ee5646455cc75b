-- Online mode (see postgres/00008_online_mode.sql; MySQL has no wake-ups to
-- update): a row's mode (dump, online, auto) and the online path's
-- statuses (To sync, Syncing, Sync failed, To cut over, Cutting over,
-- Cutover failed) with their transitions. Rows planned before this version
-- are dump rows. An online row records its dump at the close step (the
-- consistency-point dump of the frozen source), so until Done it may be past
-- the dump statuses without one.

-- +goose Up
ALTER TABLE migration ADD COLUMN mode VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'dump' AFTER status,
    ADD CONSTRAINT migration_mode CHECK (mode IN ('dump', 'online', 'auto'));

ALTER TABLE migration DROP CONSTRAINT migration_status;
ALTER TABLE migration ADD CONSTRAINT migration_status CHECK (status IN (
    'Waiting',
    'To sync', 'Syncing', 'Sync failed',
    'To cut over', 'Cutting over', 'Cutover failed',
    'To dump', 'Dumping', 'Dump failed',
    'To import', 'Importing', 'Import failed',
    'DNS to update', 'Updating DNS', 'DNS failed',
    'To close source', 'Closing source', 'Close failed',
    'Done',
    'To roll back', 'Rolling back', 'Rollback failed', 'Rolled back',
    'Cancelled'));

ALTER TABLE migration DROP CONSTRAINT migration_working_is_owned;
ALTER TABLE migration ADD CONSTRAINT migration_working_is_owned CHECK (
    (status IN ('Syncing', 'Cutting over', 'Dumping', 'Importing', 'Updating DNS', 'Closing source', 'Rolling back'))
    = (owner IS NOT NULL));

ALTER TABLE migration DROP CONSTRAINT migration_dump_recorded;
ALTER TABLE migration ADD CONSTRAINT migration_dump_recorded CHECK (
    status NOT IN ('To import', 'Importing', 'Import failed',
                   'DNS to update', 'Updating DNS', 'DNS failed',
                   'To close source', 'Closing source', 'Close failed', 'Done')
    OR (mode = 'online' AND status <> 'Done')
    OR (dump_sha256 IS NOT NULL AND dump_bytes IS NOT NULL AND (dump_url IS NOT NULL OR status = 'Done')));

INSERT INTO migration_transition (from_status, to_status) VALUES
    ('Cutover failed', 'To cut over'),
    ('Cutover failed', 'To roll back'),
    ('Cutting over', 'Cutover failed'),
    ('Cutting over', 'DNS to update'),
    ('Cutting over', 'To close source'),
    ('Cutting over', 'To cut over'),
    ('Cutting over', 'To sync'),
    ('Sync failed', 'To roll back'),
    ('Sync failed', 'To sync'),
    ('Syncing', 'Sync failed'),
    ('Syncing', 'To cut over'),
    ('Syncing', 'To dump'),
    ('Syncing', 'To roll back'),
    ('Syncing', 'To sync'),
    ('To cut over', 'Cutting over'),
    ('To cut over', 'To roll back'),
    ('To sync', 'Syncing'),
    ('To sync', 'To roll back'),
    ('Waiting', 'To sync');


-- +goose Down
DELETE FROM migration_transition WHERE from_status IN ('To sync', 'Syncing', 'Sync failed', 'To cut over', 'Cutting over', 'Cutover failed')
    OR to_status IN ('To sync', 'Syncing', 'Sync failed', 'To cut over', 'Cutting over', 'Cutover failed');
ALTER TABLE migration DROP CONSTRAINT migration_dump_recorded;
ALTER TABLE migration ADD CONSTRAINT migration_dump_recorded CHECK (
    status NOT IN ('To import', 'Importing', 'Import failed',
                   'DNS to update', 'Updating DNS', 'DNS failed',
                   'To close source', 'Closing source', 'Close failed', 'Done')
    OR (dump_sha256 IS NOT NULL AND dump_bytes IS NOT NULL AND (dump_url IS NOT NULL OR status = 'Done')));
ALTER TABLE migration DROP CONSTRAINT migration_working_is_owned;
ALTER TABLE migration ADD CONSTRAINT migration_working_is_owned CHECK (
    (status IN ('Dumping', 'Importing', 'Updating DNS', 'Closing source', 'Rolling back'))
    = (owner IS NOT NULL));
ALTER TABLE migration DROP CONSTRAINT migration_status;
ALTER TABLE migration ADD CONSTRAINT migration_status CHECK (status IN (
    'Waiting',
    'To dump', 'Dumping', 'Dump failed',
    'To import', 'Importing', 'Import failed',
    'DNS to update', 'Updating DNS', 'DNS failed',
    'To close source', 'Closing source', 'Close failed',
    'Done',
    'To roll back', 'Rolling back', 'Rollback failed', 'Rolled back',
    'Cancelled'));
ALTER TABLE migration DROP CONSTRAINT migration_mode;
ALTER TABLE migration DROP COLUMN mode;
