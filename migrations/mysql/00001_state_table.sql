-- fleetmigrate state database, MySQL 8.0.16+ / MariaDB 10.6+ (InnoDB).
-- Same tables and constraints as the PostgreSQL schema. Names are stored as
-- VARBINARY so that comparisons are byte for byte (no case folding, no
-- trailing-space padding): `Shop`, `shop` and `shop ` are three databases.
-- Host IDs, DNS names and statuses are ASCII with binary collation.
-- Creating the trigger needs the TRIGGER privilege and, where binary logging
-- is on, SUPER or log_bin_trust_function_creators=1.

-- +goose Up
CREATE TABLE migration (
    id                BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    engine            VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    database_name     VARBINARY(256) NOT NULL,
    source            VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    destination       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    dns_name          VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
    status            VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'Waiting',
    attempt           INT NOT NULL DEFAULT 0,
    owner             VARCHAR(255),
    lease_until       DATETIME(6),
    fence             BIGINT NOT NULL DEFAULT 0,
    dump_url          TEXT,
    dump_sha256       CHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    dump_bytes        BIGINT,
    consistency_point DATETIME(6),
    size_bytes        BIGINT,
    blocked_at        DATETIME(6),
    unblocked_at      DATETIME(6),
    switched_at       DATETIME(6),
    last_error        TEXT,
    created_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),

    CONSTRAINT migration_source_engine_database UNIQUE (source, engine, database_name),
    CONSTRAINT migration_engine CHECK (engine IN ('mysql', 'postgres')),
    CONSTRAINT migration_database_name CHECK (database_name <> ''),
    CONSTRAINT migration_hosts CHECK (source <> '' AND destination <> ''),
    CONSTRAINT migration_status CHECK (status IN (
        'Waiting',
        'To dump', 'Dumping', 'Dump failed',
        'To import', 'Importing', 'Import failed',
        'DNS to update', 'Updating DNS', 'DNS failed',
        'To close source', 'Closing source', 'Close failed',
        'Done',
        'To roll back', 'Rolling back', 'Rollback failed', 'Rolled back',
        'Cancelled')),
    CONSTRAINT migration_counters CHECK (attempt >= 0 AND fence >= 0),
    CONSTRAINT migration_sizes CHECK ((dump_bytes IS NULL OR dump_bytes >= 0) AND (size_bytes IS NULL OR size_bytes >= 0)),
    CONSTRAINT migration_dump_sha256 CHECK (dump_sha256 REGEXP '^[0-9a-f]{64}$'),
    CONSTRAINT migration_source_is_not_destination CHECK (source <> destination),
    -- a row is held (owner and lease) exactly while it is in a working status
    CONSTRAINT migration_owner_with_lease CHECK ((owner IS NULL) = (lease_until IS NULL)),
    CONSTRAINT migration_working_is_owned CHECK (
        (status IN ('Dumping', 'Importing', 'Updating DNS', 'Closing source', 'Rolling back'))
        = (owner IS NOT NULL)),
    -- past the dump step a row always knows its dump
    CONSTRAINT migration_dump_recorded CHECK (
        status NOT IN ('To import', 'Importing', 'Import failed',
                       'DNS to update', 'Updating DNS', 'DNS failed',
                       'To close source', 'Closing source', 'Close failed', 'Done')
        OR (dump_url IS NOT NULL AND dump_sha256 IS NOT NULL AND dump_bytes IS NOT NULL)),

    -- claims: WHERE source = ? AND status = ? ORDER BY id (dump, close, rollback).
    -- The index must cover both the WHERE and the ORDER BY: otherwise InnoDB
    -- sorts, locks every row it scanned, and SKIP LOCKED claimers starve.
    INDEX migration_source_status (source, status, id),
    -- claims: WHERE destination = ? AND status = ? ORDER BY id (import)
    INDEX migration_destination_status (destination, status, id),
    -- claims without a host (dns), promotion in plan order, counts, the rescuer
    INDEX migration_status (status, id),
    -- plan: does a destination already receive a database of this name?
    INDEX migration_destination_database (destination, engine, database_name),
    -- plan: is a DNS name already used by an unfinished row?
    INDEX migration_dns_name (dns_name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every (from, to) status change the state machine allows; the trigger below
-- refuses any other, whoever issues the UPDATE. Kept equal to
-- statemachine.Pairs() by the store conformance tests.
CREATE TABLE migration_transition (
    from_status VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    to_status   VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (from_status, to_status)
) ENGINE = InnoDB;
INSERT INTO migration_transition (from_status, to_status) VALUES
    ('Close failed', 'To close source'),
    ('Closing source', 'Close failed'),
    ('Closing source', 'Done'),
    ('Closing source', 'To close source'),
    ('DNS failed', 'DNS to update'),
    ('DNS failed', 'To roll back'),
    ('DNS to update', 'Updating DNS'),
    ('Dump failed', 'To dump'),
    ('Dump failed', 'To roll back'),
    ('Dumping', 'Dump failed'),
    ('Dumping', 'To dump'),
    ('Dumping', 'To import'),
    ('Import failed', 'To import'),
    ('Import failed', 'To roll back'),
    ('Importing', 'DNS to update'),
    ('Importing', 'Import failed'),
    ('Importing', 'To close source'),
    ('Importing', 'To import'),
    ('Rollback failed', 'To roll back'),
    ('Rolling back', 'Rollback failed'),
    ('Rolling back', 'Rolled back'),
    ('Rolling back', 'To roll back'),
    ('To close source', 'Closing source'),
    ('To dump', 'Dumping'),
    ('To import', 'Importing'),
    ('To roll back', 'Rolling back'),
    ('Updating DNS', 'DNS failed'),
    ('Updating DNS', 'DNS to update'),
    ('Updating DNS', 'To close source'),
    ('Waiting', 'Cancelled'),
    ('Waiting', 'To dump');

-- +goose StatementBegin
CREATE TRIGGER migration_guard_status BEFORE UPDATE ON migration FOR EACH ROW
BEGIN
    DECLARE msg VARCHAR(255);
    IF NEW.status <> OLD.status AND NOT EXISTS (
        SELECT 1 FROM migration_transition
        WHERE from_status = OLD.status AND to_status = NEW.status
    ) THEN
        SET msg = CONCAT('fleetmigrate: status change ', OLD.status, ' -> ', NEW.status,
                         ' is not in the transition table');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = msg;
    END IF;
END
-- +goose StatementEnd

-- The audit trail: every transition and every progress note of a row.
CREATE TABLE migration_event (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    migration_id BIGINT NOT NULL,
    from_status  VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    to_status    VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    actor        VARCHAR(255) NOT NULL,
    detail       TEXT NOT NULL,
    created_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    INDEX migration_event_migration (migration_id, id),
    CONSTRAINT migration_event_migration FOREIGN KEY (migration_id) REFERENCES migration (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Named switches and leases: 'stop' (the persisted stop switch: present =
-- set) and 'scheduler' (the leader lease of the one running scheduler).
CREATE TABLE control (
    name       VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    holder     VARCHAR(255) NOT NULL,
    reason     TEXT NOT NULL,
    since      DATETIME(6) NOT NULL,
    expires_at DATETIME(6),
    CONSTRAINT control_name CHECK (name IN ('stop', 'scheduler')),
    CONSTRAINT control_lease_expires CHECK (name <> 'scheduler' OR expires_at IS NOT NULL)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Agents, by heartbeat. roles is the sorted, comma-separated role list.
CREATE TABLE agent (
    host       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    roles      VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version    VARCHAR(64) NOT NULL DEFAULT '',
    dns_target VARCHAR(1024) NOT NULL DEFAULT '',
    address    VARCHAR(255) NOT NULL DEFAULT '',
    pid        INT NOT NULL DEFAULT 0,
    started_at DATETIME(6) NOT NULL,
    last_seen  DATETIME(6) NOT NULL,
    PRIMARY KEY (host, roles),
    INDEX agent_last_seen (last_seen)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE agent;
DROP TABLE control;
DROP TABLE migration_event;
DROP TRIGGER migration_guard_status;
DROP TABLE migration_transition;
DROP TABLE migration;
