-- One agent process per host ID: the agent table is keyed by host and its
-- row works as a lease on the host ID, held by the process's random
-- instance ID (heartbeats are compare-and-set on it). Heartbeat rows are
-- ephemeral, so the table is recreated.

-- +goose Up
DROP TABLE agent;
CREATE TABLE agent (
    host       text PRIMARY KEY,
    roles      text NOT NULL,
    version    text NOT NULL DEFAULT '',
    dns_target text NOT NULL DEFAULT '',
    address    text NOT NULL DEFAULT '',
    pid        integer NOT NULL DEFAULT 0,
    -- the machine the process runs on (its hostname) and the process's
    -- random instance ID: a restarted agent may take over at once from a
    -- dead process of the same machine
    machine    text NOT NULL DEFAULT '',
    instance   text NOT NULL,
    -- steps running now
    jobs       integer NOT NULL DEFAULT 0 CHECK (jobs >= 0),
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);
CREATE INDEX agent_last_seen ON agent (last_seen);

-- +goose Down
DROP TABLE agent;
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
