-- The dump step moves to the destination (issue 24): the destination's
-- agent claims "To dump" when it has a slot, blocks writes at the source,
-- pulls the dump from the source server into the store and imports the same
-- bytes as they come. A row it imported and verified goes straight on to
-- "DNS to update" (or "To close source" without a DNS name); "To import"
-- stays the way on when only the stored dump is complete. The wake-up of
-- "To dump" is now the destination's.

-- +goose Up
INSERT INTO migration_transition (from_status, to_status) VALUES
    ('Dumping', 'DNS to update'),
    ('Dumping', 'To close source');

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION fleetmigrate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('To cut over', 'To close source', 'To roll back') THEN
        PERFORM pg_notify('fm_' || md5(NEW.source), NEW.status);
    ELSIF NEW.status IN ('To dump', 'To import', 'To sync') THEN
        PERFORM pg_notify('fm_' || md5(NEW.destination), NEW.status);
    ELSIF NEW.status = 'DNS to update' THEN
        PERFORM pg_notify('fm_dns', NEW.status);
    ELSIF NEW.status IN ('Done', 'Rolled back', 'Cancelled') THEN
        PERFORM pg_notify('fm_scheduler', NEW.status);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION fleetmigrate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('To dump', 'To cut over', 'To close source', 'To roll back') THEN
        PERFORM pg_notify('fm_' || md5(NEW.source), NEW.status);
    ELSIF NEW.status IN ('To import', 'To sync') THEN
        PERFORM pg_notify('fm_' || md5(NEW.destination), NEW.status);
    ELSIF NEW.status = 'DNS to update' THEN
        PERFORM pg_notify('fm_dns', NEW.status);
    ELSIF NEW.status IN ('Done', 'Rolled back', 'Cancelled') THEN
        PERFORM pg_notify('fm_scheduler', NEW.status);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
DELETE FROM migration_transition WHERE from_status = 'Dumping' AND to_status IN ('DNS to update', 'To close source');
