-- Peer asks (issue 33, part 4), as postgres/00012_peer_asks.sql: a step
-- that needs a change at the server of its row's other side asks here, and
-- the agent of that side makes it on its own server and answers. The
-- asker is the agent holding the row; the asked host comes from the row;
-- only the asked host's agent answers, once. MariaDB has no notifications:
-- the asked agents poll for open asks, the asker for its answer.
--
-- The cutover moves to the destination (as postgres/00012 says): its agent
-- pairs are the destination's now.

-- +goose Up
CREATE TABLE migration_ask (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    migration_id BIGINT NOT NULL,
    side         VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    host         VARCHAR(255) NOT NULL DEFAULT '',
    asker        VARCHAR(255) NOT NULL DEFAULT '',
    action       VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    ref          VARCHAR(64) NOT NULL DEFAULT '',
    fence        BIGINT NOT NULL,
    asked_by     VARCHAR(255) NOT NULL DEFAULT '',
    asked_at     DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    answered_by  VARCHAR(255) NOT NULL DEFAULT '',
    answered_at  DATETIME(6) NULL,
    error        TEXT NOT NULL,
    answer       MEDIUMTEXT NOT NULL,
    CONSTRAINT migration_ask_side CHECK (side IN ('source', 'destination')),
    CONSTRAINT migration_ask_action CHECK (action REGEXP '^[a-z][a-z0-9_-]{0,31}$'),
    CONSTRAINT migration_ask_migration FOREIGN KEY (migration_id) REFERENCES migration (id) ON DELETE CASCADE,
    INDEX migration_ask_open (host, answered_at),
    INDEX migration_ask_ref (migration_id, ref)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose StatementBegin
CREATE TRIGGER migration_ask_guard_insert BEFORE INSERT ON migration_ask FOR EACH ROW
BEGIN
    DECLARE v_login VARCHAR(255) DEFAULT SUBSTRING_INDEX(USER(), '@', 1);
    DECLARE v_host VARCHAR(255);
    DECLARE v_source VARCHAR(255);
    DECLARE v_destination VARCHAR(255);
    DECLARE v_status VARCHAR(32);
    DECLARE v_fence BIGINT;
    DECLARE v_asking VARCHAR(16);
    DECLARE msg VARCHAR(512);
    SET v_host = (SELECT host FROM agent_login WHERE login = v_login);
    SELECT source, destination, status, fence INTO v_source, v_destination, v_status, v_fence FROM migration WHERE id = NEW.migration_id;
    IF v_source IS NOT NULL THEN -- otherwise the foreign key refuses it
        SET v_asking = IF(NEW.side = 'source', 'destination', 'source');
        SET NEW.host = IF(NEW.side = 'source', v_source, v_destination);
        SET NEW.asker = IF(NEW.side = 'source', v_destination, v_source);
        SET NEW.asked_by = v_login, NEW.asked_at = CURRENT_TIMESTAMP(6), NEW.answered_by = '', NEW.answered_at = NULL,
            NEW.error = '', NEW.answer = '';
        IF v_host IS NOT NULL THEN
            IF NEW.asker <> v_host THEN
                SET msg = CONCAT('fleetmigrate: ask of row ', NEW.migration_id, ' refused: only its ', v_asking, ' (host ', NEW.asker,
                                 ') asks its ', NEW.side, ', and login ', v_login, ' is the agent of host ', v_host);
                SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
            END IF;
            IF NEW.fence <> v_fence OR NOT EXISTS (SELECT 1 FROM agent_transition t
                   WHERE t.side = v_asking AND t.from_status = v_status AND t.to_status = v_status) THEN
                SET msg = CONCAT('fleetmigrate: ask of row ', NEW.migration_id, ' refused: the row is ', v_status, ', fence ', v_fence,
                                 ', and host ', v_host, ' holds it with no claim of fence ', NEW.fence);
                SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
            END IF;
        END IF;
    END IF;
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER migration_ask_guard_update BEFORE UPDATE ON migration_ask FOR EACH ROW
BEGIN
    DECLARE v_login VARCHAR(255) DEFAULT SUBSTRING_INDEX(USER(), '@', 1);
    DECLARE v_host VARCHAR(255);
    DECLARE msg VARCHAR(512);
    SET v_host = (SELECT host FROM agent_login WHERE login = v_login);
    IF v_host IS NOT NULL THEN
        IF OLD.host <> v_host THEN
            SET msg = CONCAT('fleetmigrate: the answer to ask ', OLD.id, ' (row ', OLD.migration_id, ') refused: it asks host ', OLD.host,
                             ', and login ', v_login, ' is the agent of host ', v_host);
            SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
        END IF;
        IF OLD.answered_at IS NOT NULL THEN
            SET msg = CONCAT('fleetmigrate: the answer to ask ', OLD.id, ' (row ', OLD.migration_id, ') refused: it was answered already');
            SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
        END IF;
    END IF;
    IF NOT (NEW.migration_id <=> OLD.migration_id AND NEW.side <=> OLD.side AND NEW.host <=> OLD.host AND NEW.asker <=> OLD.asker
            AND NEW.action <=> OLD.action AND NEW.ref <=> OLD.ref AND NEW.fence <=> OLD.fence AND NEW.asked_by <=> OLD.asked_by
            AND NEW.asked_at <=> OLD.asked_at) THEN
        SET msg = CONCAT('fleetmigrate: ask ', OLD.id, ' (row ', OLD.migration_id, '): only its answer may change');
        SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = msg;
    END IF;
    SET NEW.answered_by = v_login;
END
-- +goose StatementEnd

UPDATE agent_transition SET side = 'destination' WHERE side = 'source' AND from_status IN ('To cut over', 'Cutting over');

-- The login that last wrote each step record, set by the database: an
-- asked agent acts on a record (the import record: what to drop) only if
-- its own host's agent wrote it (or an operator).
ALTER TABLE migration_record ADD COLUMN login VARCHAR(255) NOT NULL DEFAULT '';
CREATE TRIGGER migration_record_login_insert BEFORE INSERT ON migration_record FOR EACH ROW
    FOLLOWS migration_record_guard_agent_insert SET NEW.login = SUBSTRING_INDEX(USER(), '@', 1);
CREATE TRIGGER migration_record_login_update BEFORE UPDATE ON migration_record FOR EACH ROW
    FOLLOWS migration_record_guard_agent_update SET NEW.login = SUBSTRING_INDEX(USER(), '@', 1);

-- +goose Down
DROP TRIGGER migration_record_login_update;
DROP TRIGGER migration_record_login_insert;
ALTER TABLE migration_record DROP COLUMN login;
UPDATE agent_transition SET side = 'source' WHERE side = 'destination' AND from_status IN ('To cut over', 'Cutting over');
DROP TRIGGER migration_ask_guard_update;
DROP TRIGGER migration_ask_guard_insert;
DROP TABLE migration_ask;
