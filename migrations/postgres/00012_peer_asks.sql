-- Peer asks (issue 33, part 4): a step that needs a change at the server
-- of its row's other side does not make it there itself; it asks, here,
-- and the agent of that side makes it on its own server and answers. So a
-- host's agent is the only one that writes to its server, and a peer needs
-- only to read it.
--
-- The asker is the agent holding the row (its side's working status, its
-- fence); the asked side's host is taken from the row, never from the
-- asker; only the asked host's agent answers, once. The asked agent checks
-- the ask against the row and plans the change from its own server: the
-- asker says what to do ("block row 7's writes"), not how.
--
-- ref ties asks together: a block and its undo share the asking step's
-- token, so that the undo finds what the block changed in the block's own
-- answer, written by the asked host's agent, not in a record the asker
-- wrote.
--
-- The cutover moves to the destination (as the dump did in 00009): it
-- changes the destination's server (stops the stream, sets sequences,
-- completes accounts, triggers and events) and needs only the block at the
-- source, which it asks of the source's agent. Its agent pairs and its
-- wake-up are the destination's now.

-- +goose Up
CREATE TABLE migration_ask (
    id           bigserial PRIMARY KEY,
    migration_id bigint NOT NULL REFERENCES migration (id) ON DELETE CASCADE,
    -- the side whose agent is asked, and its host (set from the row)
    side         text NOT NULL CHECK (side IN ('source', 'destination')),
    host         text NOT NULL DEFAULT '',
    -- the asking side's host (set from the row): its agent is told of the answer
    asker        text NOT NULL DEFAULT '',
    action       text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_-]{0,31}$'),
    ref          text NOT NULL DEFAULT '' CHECK (length(ref) <= 64),
    -- the asker's claim on the row (its fence) when it asked
    fence        bigint NOT NULL,
    asked_by     text NOT NULL DEFAULT '',
    asked_at     timestamptz NOT NULL DEFAULT now(),
    answered_by  text NOT NULL DEFAULT '',
    answered_at  timestamptz,
    -- '' when it was done; else why not
    error        text NOT NULL DEFAULT '',
    -- what was done (JSON, the action's own)
    answer       text NOT NULL DEFAULT ''
);
CREATE INDEX migration_ask_open ON migration_ask (host) WHERE answered_at IS NULL;
CREATE INDEX migration_ask_ref ON migration_ask (migration_id, ref);

-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_guard_ask() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    m      migration%ROWTYPE;
    a_host text;
    asking text;
BEGIN
    SELECT host INTO a_host FROM agent_login WHERE login = current_user;
    IF TG_OP = 'UPDATE' THEN
        IF FOUND THEN
            IF OLD.host <> a_host THEN
                RAISE EXCEPTION 'fleetmigrate: the answer to ask % (row %) refused: it asks host %, and login % is the agent of host %',
                    OLD.id, OLD.migration_id, OLD.host, current_user, a_host
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF OLD.answered_at IS NOT NULL THEN
                RAISE EXCEPTION 'fleetmigrate: the answer to ask % (row %) refused: it was answered already', OLD.id, OLD.migration_id
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END IF;
        IF (NEW.migration_id, NEW.side, NEW.host, NEW.asker, NEW.action, NEW.ref, NEW.fence, NEW.asked_by, NEW.asked_at)
           IS DISTINCT FROM (OLD.migration_id, OLD.side, OLD.host, OLD.asker, OLD.action, OLD.ref, OLD.fence, OLD.asked_by, OLD.asked_at) THEN
            RAISE EXCEPTION 'fleetmigrate: ask % (row %): only its answer may change', OLD.id, OLD.migration_id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        NEW.answered_by := current_user;
        RETURN NEW;
    END IF;
    SELECT * INTO m FROM migration WHERE id = NEW.migration_id;
    IF NOT FOUND THEN
        RETURN NEW; -- the foreign key refuses it
    END IF;
    asking := CASE NEW.side WHEN 'source' THEN 'destination' ELSE 'source' END;
    NEW.host := CASE NEW.side WHEN 'source' THEN m.source ELSE m.destination END;
    NEW.asker := CASE NEW.side WHEN 'source' THEN m.destination ELSE m.source END;
    NEW.asked_by := current_user;
    NEW.asked_at := now();
    NEW.answered_by := '';
    NEW.answered_at := NULL;
    NEW.error := '';
    NEW.answer := '';
    IF a_host IS NOT NULL THEN
        IF NEW.asker <> a_host THEN
            RAISE EXCEPTION 'fleetmigrate: ask of row % refused: only its % (host %) asks its %, and login % is the agent of host %',
                m.id, asking, NEW.asker, NEW.side, current_user, a_host
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.fence <> m.fence OR NOT EXISTS (SELECT 1 FROM agent_transition t
               WHERE t.side = asking AND t.from_status = m.status AND t.to_status = m.status) THEN
            RAISE EXCEPTION 'fleetmigrate: ask of row % refused: the row is %, fence %, and host % holds it with no claim of fence %',
                m.id, m.status, m.fence, a_host, NEW.fence
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER migration_ask_guard BEFORE INSERT OR UPDATE ON migration_ask
    FOR EACH ROW EXECUTE FUNCTION fleetmigrate_guard_ask();

-- Wake-ups (as 00007's): the asked host's agents on an ask, the asker's on
-- its answer.
-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_notify_ask() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('fm_' || md5(NEW.host), 'ask');
    ELSIF NEW.answered_at IS NOT NULL AND OLD.answered_at IS NULL THEN
        PERFORM pg_notify('fm_' || md5(NEW.asker), 'answer');
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER migration_ask_notify AFTER INSERT OR UPDATE ON migration_ask
    FOR EACH ROW EXECUTE FUNCTION fleetmigrate_notify_ask();

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION fleetmigrate_guard_ask() SET search_path = %I, pg_temp', current_schema());
    ALTER FUNCTION fleetmigrate_guard_ask() SET plan_cache_mode = force_generic_plan;
END
$$;
-- +goose StatementEnd

UPDATE agent_transition SET side = 'destination' WHERE side = 'source' AND from_status IN ('To cut over', 'Cutting over');

-- The login that last wrote each step record, set by the database: an
-- asked agent acts on a record (the import record: what to drop) only if
-- its own host's agent wrote it (or an operator).
ALTER TABLE migration_record ADD COLUMN login text NOT NULL DEFAULT '';
-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_record_login() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.login := current_user;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER migration_record_login BEFORE INSERT OR UPDATE ON migration_record
    FOR EACH ROW EXECUTE FUNCTION fleetmigrate_record_login();

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION fleetmigrate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('To close source', 'To roll back') THEN
        PERFORM pg_notify('fm_' || md5(NEW.source), NEW.status);
    ELSIF NEW.status IN ('To dump', 'To import', 'To sync', 'To cut over') THEN
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
DROP TRIGGER migration_record_login ON migration_record;
DROP FUNCTION fleetmigrate_record_login();
ALTER TABLE migration_record DROP COLUMN login;
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
UPDATE agent_transition SET side = 'source' WHERE side = 'destination' AND from_status IN ('To cut over', 'Cutting over');
DROP TRIGGER migration_ask_notify ON migration_ask;
DROP FUNCTION fleetmigrate_notify_ask();
DROP TRIGGER migration_ask_guard ON migration_ask;
DROP FUNCTION fleetmigrate_guard_ask();
DROP TABLE migration_ask;
