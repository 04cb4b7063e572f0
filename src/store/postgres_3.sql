-- v2fhir outbox (PostgreSQL): one row per converted message still to be delivered to the upstream
-- FHIR server, written in the message's own transaction. Delivered rows are deleted (the message
-- becomes `delivered`); rows the upstream refused stay as `dead` until reprocessed.
CREATE TABLE IF NOT EXISTS outbox (
    message_id      BIGINT PRIMARY KEY,
    -- Messages with the same key (the patient) are delivered one after the other, in id order.
    order_key       TEXT    COLLATE "C" NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',  -- pending | dead
    attempts        BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    outcome         TEXT
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (order_key, message_id) WHERE state = 'pending';
-- Claims walk the pending rows in id order and stop at their LIMIT (no sort of the backlog); the
-- index covers the due and lease tests, so rows waiting for a retry are skipped in the index.
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (message_id, next_attempt_at, lease_until)
    WHERE state = 'pending';
-- The patient key of a converted message (sinks with an upstream): replaying an older message
-- re-delivers the later ones of its patient after it.
ALTER TABLE messages ADD COLUMN order_key TEXT;
CREATE INDEX IF NOT EXISTS messages_order ON messages (order_key, id) WHERE order_key IS NOT NULL;
