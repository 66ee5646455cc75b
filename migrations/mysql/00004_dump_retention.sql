-- Retention: once a dump is deleted (migrate gc), its Done row loses its
-- dump_url; the digest and size stay as the record of what was verified.
-- Rows still in the pipeline always know their dump.

-- +goose Up
ALTER TABLE migration DROP CONSTRAINT migration_dump_recorded;
ALTER TABLE migration ADD CONSTRAINT migration_dump_recorded CHECK (
    status NOT IN ('To import', 'Importing', 'Import failed',
                   'DNS to update', 'Updating DNS', 'DNS failed',
                   'To close source', 'Closing source', 'Close failed', 'Done')
    OR (dump_sha256 IS NOT NULL AND dump_bytes IS NOT NULL AND (dump_url IS NOT NULL OR status = 'Done')));

-- +goose Down
ALTER TABLE migration DROP CONSTRAINT migration_dump_recorded;
ALTER TABLE migration ADD CONSTRAINT migration_dump_recorded CHECK (
    status NOT IN ('To import', 'Importing', 'Import failed',
                   'DNS to update', 'Updating DNS', 'DNS failed',
                   'To close source', 'Closing source', 'Close failed', 'Done')
    OR (dump_url IS NOT NULL AND dump_sha256 IS NOT NULL AND dump_bytes IS NOT NULL));
