-- The dump step moves to the destination (issue 24): the destination's
-- agent claims "To dump" when it has a slot, blocks writes at the source,
-- pulls the dump from the source server into the store and imports the same
-- bytes as they come. A row it imported and verified goes straight on to
-- "DNS to update" (or "To close source" without a DNS name); "To import"
-- stays the way on when only the stored dump is complete.

-- +goose Up
INSERT INTO migration_transition (from_status, to_status) VALUES
    ('Dumping', 'DNS to update'),
    ('Dumping', 'To close source');

-- +goose Down
DELETE FROM migration_transition WHERE from_status = 'Dumping' AND to_status IN ('DNS to update', 'To close source');
