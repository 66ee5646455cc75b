-- Wake-ups: when a row enters a status an agent claims from, tell the
-- agents of the host that claims it at once (LISTEN/NOTIFY), so a
-- downtime-critical hand-off (To import, DNS to update) does not wait for the
-- next poll. When a row leaves flight, tell the scheduler (a slot is free).
-- Polling stays the fallback: notifications are lost while a listener is
-- disconnected. Channels: 'fm_' || md5(host) per host (host IDs can be
-- longer than a channel name may be), 'fm_dns' for the DNS agent, and
-- 'fm_scheduler'. The payload is the new status. The notification is sent
-- when the transaction commits; identical ones in one transaction (a batch
-- of promotions from one source) are sent once.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('To dump', 'To close source', 'To roll back') THEN
        PERFORM pg_notify('fm_' || md5(NEW.source), NEW.status);
    ELSIF NEW.status = 'To import' THEN
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
CREATE TRIGGER migration_notify AFTER UPDATE OF status ON migration
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION fleetmigrate_notify();

-- +goose Down
DROP TRIGGER migration_notify ON migration;
DROP FUNCTION fleetmigrate_notify();
