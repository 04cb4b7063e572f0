-- v2fhir forwarding queue (SQLite): accepted HL7 v2 messages to pass on, as received, to
-- downstream MLLP systems (`[forward]` and its routes), and FHIR writes with Observations turned
-- into ORU^R01, written in the message's own transaction. One row per message and destination:
-- `pending` until the receiver answers AA/CA (`sent`, with its ACK) or AE/AR/CE/CR (`dead`, with
-- its ACK and reason, until reprocessed). Each destination's rows go in message id order.
CREATE TABLE IF NOT EXISTS forward_queue (
    destination     TEXT    NOT NULL,                    -- `default`, or the route's name
    message_id      INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',  -- pending | sent | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    ack             TEXT,
    -- The message sent, when the gateway built it (an ORU^R01 from a FHIR write); a v2 message
    -- is sent as received (messages.raw).
    payload         TEXT,
    sent_at         INTEGER,
    PRIMARY KEY (destination, message_id)
);
CREATE INDEX IF NOT EXISTS forward_pending ON forward_queue (destination, message_id)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS forward_message ON forward_queue (message_id);
