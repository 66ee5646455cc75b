-- One agent process per host ID: the agent table is keyed by host and its
-- row works as a lease on the host ID, held by the process's random
-- instance ID (heartbeats are compare-and-set on it). Heartbeat rows are
-- ephemeral, so the table is recreated.

-- +goose Up
DROP TABLE agent;
CREATE TABLE agent (
    host       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    roles      VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version    VARCHAR(64) NOT NULL DEFAULT '',
    dns_target VARCHAR(1024) NOT NULL DEFAULT '',
    address    VARCHAR(255) NOT NULL DEFAULT '',
    pid        INT NOT NULL DEFAULT 0,
    -- the machine the process runs on (its hostname) and the process's
    -- random instance ID: a restarted agent may take over at once from a
    -- dead process of the same machine
    machine    VARCHAR(255) NOT NULL DEFAULT '',
    instance   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- steps running now
    jobs       INT NOT NULL DEFAULT 0,
    started_at DATETIME(6) NOT NULL,
    last_seen  DATETIME(6) NOT NULL,
    CONSTRAINT agent_jobs CHECK (jobs >= 0),
    INDEX agent_last_seen (last_seen)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE agent;
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
