-- Per-agent identity (issue 33): each agent logs in to the state database
-- as its host's own login (`migrate db grant-agent HOST`), and the database
-- itself holds it to its host's rows, whatever the agent's code does:
--
--   * column privileges: an agent login may update only the columns its
--     steps move (status, lease, fence, attempt, dump, marks, last_error...),
--     never source, destination, dns_name, engine or database_name; mode
--     only from 'auto' (the sync step's choice of path);
--   * the triggers below: an update of a migration row, an event on it and a
--     step record of it are refused unless the login acts for one of the
--     row's sides — its source host, its destination host, or the DNS rows
--     for a login granted --dns — and the status change is one that side's
--     step makes (agent_transition); an agent login may write only its own
--     host's entry of the agent registry (so it publishes only its own
--     address and DNS target).
--
-- Logins that are not in agent_login are operators (plan, retry, rollback,
-- stop, the scheduler): the triggers let them pass, and the transition
-- table still holds everyone. Row-level security alone cannot say this: a
-- policy sees either the old row or the new one, and the rule is about the
-- move from one to the other; a BEFORE trigger sees both, refuses with a
-- message that names the row and the login, and works the same on MariaDB,
-- which has no row-level security.
--
-- The functions run with the caller's rights (never SECURITY DEFINER:
-- current_user must be the agent) and a fixed search_path ending in
-- pg_temp, so that a temporary table cannot stand in for agent_login.

-- +goose Up
CREATE TABLE agent_login (
    login      text PRIMARY KEY,
    host       text NOT NULL CHECK (host <> ''),
    -- the login may also move rows in the DNS step's statuses
    dns        boolean NOT NULL DEFAULT false,
    -- MySQL/MariaDB: the account's host part ('%': from anywhere); '' here
    client_host text NOT NULL DEFAULT '',
    granted_by text NOT NULL DEFAULT '',
    granted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_login_host ON agent_login (host);

-- The login that last wrote each registry entry, set by the database (the
-- guard below): `migrate status` shows which agents still run on an
-- operator's login.
ALTER TABLE agent ADD COLUMN login text NOT NULL DEFAULT '';

-- Every status change an agent login may make on a row, by the side it acts
-- for; from = to: a write that keeps the status (lease, fields, notes,
-- records) while the row is in that side's working status. Kept equal to
-- statemachine.AgentPairs() by the store conformance tests.
CREATE TABLE agent_transition (
    side        text NOT NULL CHECK (side IN ('source', 'destination', 'dns')),
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (side, from_status, to_status)
);
INSERT INTO agent_transition (side, from_status, to_status) VALUES
    ('destination', 'Dumping', 'DNS to update'),
    ('destination', 'Dumping', 'Dump failed'),
    ('destination', 'Dumping', 'Dumping'),
    ('destination', 'Dumping', 'To close source'),
    ('destination', 'Dumping', 'To dump'),
    ('destination', 'Dumping', 'To import'),
    ('destination', 'Importing', 'DNS to update'),
    ('destination', 'Importing', 'Import failed'),
    ('destination', 'Importing', 'Importing'),
    ('destination', 'Importing', 'To close source'),
    ('destination', 'Importing', 'To import'),
    ('destination', 'Syncing', 'Sync failed'),
    ('destination', 'Syncing', 'Syncing'),
    ('destination', 'Syncing', 'To cut over'),
    ('destination', 'Syncing', 'To dump'),
    ('destination', 'Syncing', 'To sync'),
    ('destination', 'To dump', 'Dumping'),
    ('destination', 'To import', 'Importing'),
    ('destination', 'To sync', 'Syncing'),
    ('dns', 'DNS to update', 'Updating DNS'),
    ('dns', 'Updating DNS', 'DNS failed'),
    ('dns', 'Updating DNS', 'DNS to update'),
    ('dns', 'Updating DNS', 'To close source'),
    ('dns', 'Updating DNS', 'Updating DNS'),
    ('source', 'Closing source', 'Close failed'),
    ('source', 'Closing source', 'Closing source'),
    ('source', 'Closing source', 'Done'),
    ('source', 'Closing source', 'To close source'),
    ('source', 'Cutting over', 'Cutover failed'),
    ('source', 'Cutting over', 'Cutting over'),
    ('source', 'Cutting over', 'DNS to update'),
    ('source', 'Cutting over', 'To close source'),
    ('source', 'Cutting over', 'To cut over'),
    ('source', 'Cutting over', 'To sync'),
    ('source', 'Rolling back', 'Rollback failed'),
    ('source', 'Rolling back', 'Rolled back'),
    ('source', 'Rolling back', 'Rolling back'),
    ('source', 'Rolling back', 'To roll back'),
    ('source', 'To close source', 'Closing source'),
    ('source', 'To cut over', 'Cutting over'),
    ('source', 'To roll back', 'Rolling back');

-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_agent_may(p_source text, p_destination text, p_from text, p_to text, p_what text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    a_host text;
    a_dns  boolean;
BEGIN
    SELECT host, dns INTO a_host, a_dns FROM agent_login WHERE login = current_user;
    IF NOT FOUND THEN
        RETURN; -- an operator's login
    END IF;
    IF EXISTS (SELECT 1 FROM agent_transition t
               WHERE t.from_status = p_from AND t.to_status = p_to
                 AND ((t.side = 'source' AND p_source = a_host)
                   OR (t.side = 'destination' AND p_destination = a_host)
                   OR (t.side = 'dns' AND a_dns))) THEN
        RETURN;
    END IF;
    IF p_source <> a_host AND p_destination <> a_host AND NOT a_dns THEN
        RAISE EXCEPTION 'fleetmigrate: % refused: the row goes from % to %, and login % is the agent of host %',
            p_what, p_source, p_destination, current_user, a_host
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'fleetmigrate: % refused: % -> % is no step of host %''s agent (login %) on a row from % to %',
        p_what, p_from, p_to, a_host, current_user, p_source, p_destination
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

-- The guards below find, in one query, whether the login is an agent's
-- (not found: an operator's, which passes) and whether the change is one
-- of its steps; only a refusal calls fleetmigrate_agent_may, for its
-- message.
-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_guard_agent_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ok boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM agent_transition t
                   WHERE t.from_status = OLD.status AND t.to_status = NEW.status
                     AND ((t.side = 'source' AND OLD.source = a.host)
                       OR (t.side = 'destination' AND OLD.destination = a.host)
                       OR (t.side = 'dns' AND a.dns)))
      INTO ok FROM agent_login a WHERE a.login = current_user;
    IF NOT FOUND THEN
        RETURN NEW; -- an operator's login
    END IF;
    IF NEW.mode IS DISTINCT FROM OLD.mode AND OLD.mode <> 'auto' THEN
        RAISE EXCEPTION 'fleetmigrate: update of row % refused: its mode is %, and an agent only chooses the path of an auto row', OLD.id, OLD.mode
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT ok THEN
        PERFORM fleetmigrate_agent_may(OLD.source, OLD.destination, OLD.status, NEW.status, 'update of row ' || OLD.id);
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER migration_guard_agent BEFORE UPDATE ON migration
    FOR EACH ROW EXECUTE FUNCTION fleetmigrate_guard_agent_update();

-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_guard_agent_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ok            boolean;
    m_source      text;
    m_destination text;
BEGIN
    SELECT EXISTS (SELECT 1 FROM migration m, agent_transition t
                   WHERE m.id = NEW.migration_id AND t.from_status = NEW.from_status AND t.to_status = NEW.to_status
                     AND ((t.side = 'source' AND m.source = a.host)
                       OR (t.side = 'destination' AND m.destination = a.host)
                       OR (t.side = 'dns' AND a.dns)))
      INTO ok FROM agent_login a WHERE a.login = current_user;
    IF NOT FOUND OR ok THEN
        RETURN NEW;
    END IF;
    SELECT source, destination INTO m_source, m_destination FROM migration WHERE id = NEW.migration_id;
    IF FOUND THEN -- otherwise the foreign key refuses it
        PERFORM fleetmigrate_agent_may(m_source, m_destination, NEW.from_status, NEW.to_status, 'an event on row ' || NEW.migration_id);
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER migration_event_guard_agent BEFORE INSERT ON migration_event
    FOR EACH ROW EXECUTE FUNCTION fleetmigrate_guard_agent_event();

-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_guard_agent_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ok            boolean;
    m_source      text;
    m_destination text;
    m_status      text;
BEGIN
    SELECT EXISTS (SELECT 1 FROM migration m, agent_transition t
                   WHERE m.id = NEW.migration_id AND t.from_status = m.status AND t.to_status = m.status
                     AND ((t.side = 'source' AND m.source = a.host)
                       OR (t.side = 'destination' AND m.destination = a.host)
                       OR (t.side = 'dns' AND a.dns)))
      INTO ok FROM agent_login a WHERE a.login = current_user;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.migration_id <> OLD.migration_id THEN
        RAISE EXCEPTION 'fleetmigrate: a step record of row % refused: a record stays with its row', OLD.migration_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF ok THEN
        RETURN NEW;
    END IF;
    SELECT source, destination, status INTO m_source, m_destination, m_status FROM migration WHERE id = NEW.migration_id;
    IF FOUND THEN
        PERFORM fleetmigrate_agent_may(m_source, m_destination, m_status, m_status, 'a step record of row ' || NEW.migration_id);
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER migration_record_guard_agent BEFORE INSERT OR UPDATE ON migration_record
    FOR EACH ROW EXECUTE FUNCTION fleetmigrate_guard_agent_record();

-- +goose StatementBegin
CREATE FUNCTION fleetmigrate_guard_agent_registry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a_host text;
    h      text;
BEGIN
    SELECT host INTO a_host FROM agent_login WHERE login = current_user;
    IF FOUND THEN
        FOREACH h IN ARRAY CASE TG_OP WHEN 'INSERT' THEN ARRAY[NEW.host] WHEN 'DELETE' THEN ARRAY[OLD.host] ELSE ARRAY[OLD.host, NEW.host] END LOOP
            IF h <> a_host THEN
                RAISE EXCEPTION 'fleetmigrate: registry entry of host % refused: login % is the agent of host % and speaks only for it', h, current_user, a_host
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END LOOP;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    NEW.login := current_user;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER agent_guard_agent BEFORE INSERT OR UPDATE OR DELETE ON agent
    FOR EACH ROW EXECUTE FUNCTION fleetmigrate_guard_agent_registry();

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION fleetmigrate_agent_may(text, text, text, text, text) SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION fleetmigrate_guard_agent_update() SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION fleetmigrate_guard_agent_event() SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION fleetmigrate_guard_agent_record() SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION fleetmigrate_guard_agent_registry() SET search_path = %I, pg_temp', current_schema());
    -- Our sessions plan each statement for its values (plan_cache_mode =
    -- force_custom_plan, for the skewed status column); the guards' lookups
    -- on small keyed tables keep one plan instead of being planned per row.
    ALTER FUNCTION fleetmigrate_guard_agent_update() SET plan_cache_mode = force_generic_plan;
    ALTER FUNCTION fleetmigrate_guard_agent_event() SET plan_cache_mode = force_generic_plan;
    ALTER FUNCTION fleetmigrate_guard_agent_record() SET plan_cache_mode = force_generic_plan;
    ALTER FUNCTION fleetmigrate_guard_agent_registry() SET plan_cache_mode = force_generic_plan;
    -- the same for the transition guard of 00001 (every status change)
    ALTER FUNCTION migration_guard_status() SET plan_cache_mode = force_generic_plan;
END
$$;
-- +goose StatementEnd

-- +goose Down
ALTER FUNCTION migration_guard_status() RESET plan_cache_mode;
DROP TRIGGER agent_guard_agent ON agent;
DROP TRIGGER migration_record_guard_agent ON migration_record;
DROP TRIGGER migration_event_guard_agent ON migration_event;
DROP TRIGGER migration_guard_agent ON migration;
DROP FUNCTION fleetmigrate_guard_agent_registry();
DROP FUNCTION fleetmigrate_guard_agent_record();
DROP FUNCTION fleetmigrate_guard_agent_event();
DROP FUNCTION fleetmigrate_guard_agent_update();
DROP FUNCTION fleetmigrate_agent_may(text, text, text, text, text);
DROP TABLE agent_transition;
ALTER TABLE agent DROP COLUMN login;
DROP TABLE agent_login;
