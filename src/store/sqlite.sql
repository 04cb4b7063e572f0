-- v2fhir message log, SQLite dialect. Times are microseconds since the Unix epoch (UTC).
CREATE TABLE IF NOT EXISTS messages (
    id                  INTEGER PRIMARY KEY,
    received_at         INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    source              TEXT    NOT NULL,
    sending_application TEXT    NOT NULL,
    sending_facility    TEXT    NOT NULL,
    control_id          TEXT    NOT NULL,
    message_type        TEXT    NOT NULL,
    charset             TEXT    NOT NULL,
    content_hash        TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    ack_code            TEXT,
    collision           INTEGER NOT NULL DEFAULT 0,
    duplicate_of        INTEGER,
    raw                 BLOB    NOT NULL,
    diagnostics         TEXT,
    output              TEXT,
    ack                 TEXT
);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at, id);
CREATE INDEX IF NOT EXISTS messages_status ON messages (status, received_at, id);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sending_application, sending_facility, received_at, id);
CREATE INDEX IF NOT EXISTS messages_type ON messages (message_type, received_at, id);
-- Duplicate detection and the control-id lookup of every commit (control id first: the lookup
-- is `control_id IN (…)` for a whole batch).
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedupe
    ON messages (control_id, sending_application, sending_facility, content_hash)
    WHERE status <> 'duplicate';
