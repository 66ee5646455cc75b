-- Per-agent identity (issue 33), as postgres/00011_agent_logins.sql: each
-- agent logs in as its host's own account (`migrate db grant-agent HOST`);
-- column privileges keep it to the columns its steps move, and the triggers
-- below to its host's rows, the status changes of its side's steps, and its
-- own registry entry. Accounts not in agent_login are operators.
--
-- MariaDB and MySQL have no row-level security; triggers hold here too.
-- A trigger runs with its definer's rights, so the account that calls is
-- USER() (the login the client gave), not CURRENT_USER() (the definer).
-- An agent account cannot change a trigger or the procedure (no TRIGGER,
-- ALTER ROUTINE or DROP privilege), nor agent_login (SELECT only).

-- +goose Up
CREATE TABLE agent_login (
    login      VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    host       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    dns        BOOLEAN NOT NULL DEFAULT FALSE,
    -- the account's host part ('%': from anywhere)
    client_host VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '%',
    granted_by VARCHAR(255) NOT NULL DEFAULT '',
    granted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT agent_login_host CHECK (host <> ''),
    INDEX agent_login_host (host)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The login that last wrote each registry entry, set by the database (the
-- guards below): `migrate status` shows which agents still run on an
-- operator's account.
ALTER TABLE agent ADD COLUMN login VARCHAR(255) NOT NULL DEFAULT '';

-- Every status change an agent login may make on a row, by the side it acts
-- for (from = to: a write that keeps the status). Kept equal to
-- statemachine.AgentPairs() by the store conformance tests.
CREATE TABLE agent_transition (
    side        VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    from_status VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    to_status   VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (side, from_status, to_status),
    CONSTRAINT agent_transition_side CHECK (side IN ('source', 'destination', 'dns'))
) ENGINE = InnoDB;
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
CREATE PROCEDURE fleetmigrate_agent_may(IN p_source VARCHAR(255), IN p_destination VARCHAR(255),
    IN p_from VARCHAR(32), IN p_to VARCHAR(32), IN p_what VARCHAR(64))
proc: BEGIN
    DECLARE v_login VARCHAR(255) DEFAULT SUBSTRING_INDEX(USER(), '@', 1);
    DECLARE v_host VARCHAR(255);
    DECLARE v_dns BOOLEAN;
    DECLARE msg VARCHAR(512);
    SET v_host = (SELECT host FROM agent_login WHERE login = v_login);
    IF v_host IS NULL THEN
        LEAVE proc; -- an operator's account
    END IF;
    SET v_dns = (SELECT dns FROM agent_login WHERE login = v_login);
    IF EXISTS (SELECT 1 FROM agent_transition t
               WHERE t.from_status = p_from AND t.to_status = p_to
                 AND ((t.side = 'source' AND p_source = v_host)
                   OR (t.side = 'destination' AND p_destination = v_host)
                   OR (t.side = 'dns' AND v_dns))) THEN
        LEAVE proc;
    END IF;
    IF p_source <> v_host AND p_destination <> v_host AND NOT v_dns THEN
        SET msg = CONCAT('fleetmigrate: ', p_what, ' refused: the row goes from ', p_source, ' to ', p_destination,
                         ', and login ', v_login, ' is the agent of host ', v_host);
    ELSE
        SET msg = CONCAT('fleetmigrate: ', p_what, ' refused: ', p_from, ' -> ', p_to, ' is no step of host ', v_host,
                         '''s agent (login ', v_login, ') on a row from ', p_source, ' to ', p_destination);
    END IF;
    SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
END
-- +goose StatementEnd

-- The guards below find, in one query, whether the account is an agent's
-- (NULL: an operator's, which passes) and whether the change is one of its
-- steps; only a refusal calls fleetmigrate_agent_may, for its message.
-- +goose StatementBegin
CREATE TRIGGER migration_guard_agent BEFORE UPDATE ON migration FOR EACH ROW
BEGIN
    DECLARE v_ok BOOLEAN;
    DECLARE msg VARCHAR(512);
    SET v_ok = (SELECT EXISTS (SELECT 1 FROM agent_transition t
                               WHERE t.from_status = OLD.status AND t.to_status = NEW.status
                                 AND ((t.side = 'source' AND OLD.source = a.host)
                                   OR (t.side = 'destination' AND OLD.destination = a.host)
                                   OR (t.side = 'dns' AND a.dns)))
                FROM agent_login a WHERE a.login = SUBSTRING_INDEX(USER(), '@', 1));
    IF v_ok IS NOT NULL THEN
        IF NEW.mode <> OLD.mode AND OLD.mode <> 'auto' THEN
            SET msg = CONCAT('fleetmigrate: update of row ', OLD.id, ' refused: its mode is ', OLD.mode,
                             ', and an agent only chooses the path of an auto row');
            SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
        END IF;
        IF NOT v_ok THEN
            CALL fleetmigrate_agent_may(OLD.source, OLD.destination, OLD.status, NEW.status, CONCAT('update of row ', OLD.id));
        END IF;
    END IF;
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER migration_event_guard_agent BEFORE INSERT ON migration_event FOR EACH ROW
BEGIN
    DECLARE v_ok BOOLEAN;
    DECLARE v_source VARCHAR(255);
    DECLARE v_destination VARCHAR(255);
    SET v_ok = (SELECT EXISTS (SELECT 1 FROM migration m, agent_transition t
                               WHERE m.id = NEW.migration_id AND t.from_status = NEW.from_status AND t.to_status = NEW.to_status
                                 AND ((t.side = 'source' AND m.source = a.host)
                                   OR (t.side = 'destination' AND m.destination = a.host)
                                   OR (t.side = 'dns' AND a.dns)))
                FROM agent_login a WHERE a.login = SUBSTRING_INDEX(USER(), '@', 1));
    IF v_ok IS NOT NULL AND NOT v_ok THEN
        SET v_source = (SELECT source FROM migration WHERE id = NEW.migration_id);
        SET v_destination = (SELECT destination FROM migration WHERE id = NEW.migration_id);
        IF v_source IS NOT NULL THEN -- otherwise the foreign key refuses it
            CALL fleetmigrate_agent_may(v_source, v_destination, NEW.from_status, NEW.to_status, CONCAT('an event on row ', NEW.migration_id));
        END IF;
    END IF;
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER migration_record_guard_agent_insert BEFORE INSERT ON migration_record FOR EACH ROW
BEGIN
    DECLARE v_ok BOOLEAN;
    DECLARE v_source VARCHAR(255);
    DECLARE v_destination VARCHAR(255);
    DECLARE v_status VARCHAR(32);
    SET v_ok = (SELECT EXISTS (SELECT 1 FROM migration m, agent_transition t
                               WHERE m.id = NEW.migration_id AND t.from_status = m.status AND t.to_status = m.status
                                 AND ((t.side = 'source' AND m.source = a.host)
                                   OR (t.side = 'destination' AND m.destination = a.host)
                                   OR (t.side = 'dns' AND a.dns)))
                FROM agent_login a WHERE a.login = SUBSTRING_INDEX(USER(), '@', 1));
    IF v_ok IS NOT NULL AND NOT v_ok THEN
        SELECT source, destination, status INTO v_source, v_destination, v_status FROM migration WHERE id = NEW.migration_id;
        IF v_source IS NOT NULL THEN
            CALL fleetmigrate_agent_may(v_source, v_destination, v_status, v_status, CONCAT('a step record of row ', NEW.migration_id));
        END IF;
    END IF;
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER migration_record_guard_agent_update BEFORE UPDATE ON migration_record FOR EACH ROW
BEGIN
    DECLARE v_ok BOOLEAN;
    DECLARE v_source VARCHAR(255);
    DECLARE v_destination VARCHAR(255);
    DECLARE v_status VARCHAR(32);
    DECLARE msg VARCHAR(512);
    SET v_ok = (SELECT EXISTS (SELECT 1 FROM migration m, agent_transition t
                               WHERE m.id = NEW.migration_id AND t.from_status = m.status AND t.to_status = m.status
                                 AND ((t.side = 'source' AND m.source = a.host)
                                   OR (t.side = 'destination' AND m.destination = a.host)
                                   OR (t.side = 'dns' AND a.dns)))
                FROM agent_login a WHERE a.login = SUBSTRING_INDEX(USER(), '@', 1));
    IF v_ok IS NOT NULL THEN
        IF NEW.migration_id <> OLD.migration_id THEN
            SET msg = CONCAT('fleetmigrate: a step record of row ', OLD.migration_id, ' refused: a record stays with its row');
            SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
        END IF;
        IF NOT v_ok THEN
            SELECT source, destination, status INTO v_source, v_destination, v_status FROM migration WHERE id = NEW.migration_id;
            IF v_source IS NOT NULL THEN
                CALL fleetmigrate_agent_may(v_source, v_destination, v_status, v_status, CONCAT('a step record of row ', NEW.migration_id));
            END IF;
        END IF;
    END IF;
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE PROCEDURE fleetmigrate_agent_registry(IN p_host VARCHAR(255))
BEGIN
    DECLARE v_login VARCHAR(255) DEFAULT SUBSTRING_INDEX(USER(), '@', 1);
    DECLARE v_host VARCHAR(255);
    DECLARE msg VARCHAR(512);
    SET v_host = (SELECT host FROM agent_login WHERE login = v_login);
    IF v_host IS NOT NULL AND p_host <> v_host THEN
        SET msg = CONCAT('fleetmigrate: registry entry of host ', p_host, ' refused: login ', v_login,
                         ' is the agent of host ', v_host, ' and speaks only for it');
        SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
    END IF;
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER agent_guard_agent_insert BEFORE INSERT ON agent FOR EACH ROW
BEGIN
    CALL fleetmigrate_agent_registry(NEW.host);
    SET NEW.login = SUBSTRING_INDEX(USER(), '@', 1);
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER agent_guard_agent_update BEFORE UPDATE ON agent FOR EACH ROW
BEGIN
    CALL fleetmigrate_agent_registry(OLD.host);
    CALL fleetmigrate_agent_registry(NEW.host);
    SET NEW.login = SUBSTRING_INDEX(USER(), '@', 1);
END
-- +goose StatementEnd

CREATE TRIGGER agent_guard_agent_delete BEFORE DELETE ON agent FOR EACH ROW
    CALL fleetmigrate_agent_registry(OLD.host);

-- +goose Down
DROP TRIGGER agent_guard_agent_delete;
DROP TRIGGER agent_guard_agent_update;
DROP TRIGGER agent_guard_agent_insert;
DROP PROCEDURE fleetmigrate_agent_registry;
DROP TRIGGER migration_record_guard_agent_update;
DROP TRIGGER migration_record_guard_agent_insert;
DROP TRIGGER migration_event_guard_agent;
DROP TRIGGER migration_guard_agent;
DROP PROCEDURE fleetmigrate_agent_may;
DROP TABLE agent_transition;
ALTER TABLE agent DROP COLUMN login;
DROP TABLE agent_login;
