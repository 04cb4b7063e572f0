-- v2fhir resource store (SQLite): current versions, every version, and the search index tables
-- (written in the same transaction as the message that produced them). Times in µs since the epoch.
CREATE TABLE IF NOT EXISTS resources (
    rid          INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    hash         TEXT    NOT NULL,
    deleted      INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS resources_id ON resources (id, type);
CREATE INDEX IF NOT EXISTS resources_type ON resources (type, rid);
CREATE INDEX IF NOT EXISTS resources_updated ON resources (type, last_updated, rid);
CREATE TABLE IF NOT EXISTS resource_versions (
    rid          INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    message_id   INTEGER,
    deleted      INTEGER NOT NULL DEFAULT 0,
    content      TEXT    NOT NULL,
    PRIMARY KEY (rid, version)
);
CREATE INDEX IF NOT EXISTS resource_versions_updated ON resource_versions (last_updated, rid, version);
-- Index tables: the primary key starts with rid (probes of one resource's rows, and deletes);
-- one secondary index for searches that start from the value. WITHOUT ROWID: the table is its primary key, one B-tree fewer to write.
CREATE TABLE IF NOT EXISTS idx_token (
    rid INTEGER NOT NULL, key TEXT NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL,
    PRIMARY KEY (rid, key, code, system)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_token_code ON idx_token (key, code, system, rid);
CREATE TABLE IF NOT EXISTS idx_string (
    rid INTEGER NOT NULL, key TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL,
    PRIMARY KEY (rid, key, norm, exact)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_string_norm ON idx_string (key, norm, rid);
CREATE TABLE IF NOT EXISTS idx_date (
    rid INTEGER NOT NULL, key TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY (rid, key, lo, hi)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_date_lo ON idx_date (key, lo, rid);
CREATE TABLE IF NOT EXISTS idx_ref (
    rid INTEGER NOT NULL, key TEXT NOT NULL, target TEXT NOT NULL,
    PRIMARY KEY (rid, key, target)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_ref_target ON idx_ref (target, key, rid);
CREATE TABLE IF NOT EXISTS idx_quantity (
    rid INTEGER NOT NULL, key TEXT NOT NULL, value REAL NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL,
    PRIMARY KEY (rid, key, value, system, code)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_quantity_value ON idx_quantity (key, value, rid);
