-- fleetmigrate state database, PostgreSQL 13+.
-- The migration table is the contract of DESIGN.md §3: one row per database
-- migration, moved between statuses by compare-and-set updates.

-- +goose Up
CREATE TABLE migration (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    engine            text NOT NULL CHECK (engine IN ('mysql', 'postgres')),
    -- any legal identifier of the engine, byte for byte (quoted everywhere)
    database_name     text NOT NULL CHECK (database_name <> '' AND octet_length(database_name) <= 256),
    source            text NOT NULL CHECK (source <> ''),
    destination       text NOT NULL CHECK (destination <> ''),
    -- empty: the row has no DNS step
    dns_name          text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'Waiting' CHECK (status IN (
                          'Waiting',
                          'To dump', 'Dumping', 'Dump failed',
                          'To import', 'Importing', 'Import failed',
                          'DNS to update', 'Updating DNS', 'DNS failed',
                          'To close source', 'Closing source', 'Close failed',
                          'Done',
                          'To roll back', 'Rolling back', 'Rollback failed', 'Rolled back',
                          'Cancelled')),
    attempt           integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    owner             text,
    lease_until       timestamptz,
    fence             bigint NOT NULL DEFAULT 0 CHECK (fence >= 0),
    dump_url          text,
    dump_sha256       text CHECK (dump_sha256 ~ '^[0-9a-f]{64}$'),
    dump_bytes        bigint CHECK (dump_bytes >= 0),
    consistency_point timestamptz,
    size_bytes        bigint CHECK (size_bytes >= 0),
    blocked_at        timestamptz,
    unblocked_at      timestamptz,
    switched_at       timestamptz,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT migration_source_engine_database UNIQUE (source, engine, database_name),
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
        OR (dump_url IS NOT NULL AND dump_sha256 IS NOT NULL AND dump_bytes IS NOT NULL))
);

-- claims: WHERE source = ? AND status = ? ORDER BY id (dump, close, rollback)
CREATE INDEX migration_source_status ON migration (source, status, id);
-- claims: WHERE destination = ? AND status = ? ORDER BY id (import)
CREATE INDEX migration_destination_status ON migration (destination, status, id);
-- claims without a host (dns), promotion in plan order, counts, the rescuer
CREATE INDEX migration_status ON migration (status, id);
-- plan: does a destination already receive a database of this name?
CREATE INDEX migration_destination_database ON migration (destination, engine, database_name);
-- plan: is a DNS name already used by an unfinished row?
CREATE INDEX migration_dns_name ON migration (dns_name) WHERE dns_name <> '';

-- Every (from, to) status change the state machine allows; the trigger below
-- refuses any other, whoever issues the UPDATE. Kept equal to
-- statemachine.Pairs() by the store conformance tests.
CREATE TABLE migration_transition (
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
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
CREATE FUNCTION migration_guard_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM migration_transition
        WHERE from_status = OLD.status AND to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'fleetmigrate: status change % -> % is not in the transition table', OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER migration_guard_status BEFORE UPDATE OF status ON migration
    FOR EACH ROW EXECUTE FUNCTION migration_guard_status();

-- The audit trail: every transition and every progress note of a row.
CREATE TABLE migration_event (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id bigint NOT NULL REFERENCES migration (id) ON DELETE CASCADE,
    from_status  text NOT NULL,
    to_status    text NOT NULL,
    actor        text NOT NULL,
    detail       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX migration_event_migration ON migration_event (migration_id, id);

-- Named switches and leases: 'stop' (the persisted stop switch: present =
-- set) and 'scheduler' (the leader lease of the one running scheduler).
CREATE TABLE control (
    name       text PRIMARY KEY CHECK (name IN ('stop', 'scheduler')),
    holder     text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    since      timestamptz NOT NULL,
    expires_at timestamptz,
    CONSTRAINT control_lease_expires CHECK (name <> 'scheduler' OR expires_at IS NOT NULL)
);

-- Agents, by heartbeat. roles is the sorted, comma-separated role list.
CREATE TABLE agent (
    host       text NOT NULL,
    roles      text NOT NULL,
    version    text NOT NULL DEFAULT '',
    dns_target text NOT NULL DEFAULT '',
    address    text NOT NULL DEFAULT '',
    pid        integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (host, roles)
);
CREATE INDEX agent_last_seen ON agent (last_seen);

-- +goose Down
DROP TABLE agent;
DROP TABLE control;
DROP TABLE migration_event;
DROP TRIGGER migration_guard_status ON migration;
DROP FUNCTION migration_guard_status();
DROP TABLE migration_transition;
DROP TABLE migration;
