-- A row is a chain of records (issue 16): its customer (position 0), its conversation
-- (position 1), then the conversation's history, each message and note a step of its own
-- (issue 17). The first two stay where they are, in `rows`: moving them to a table of
-- their own cost a third more instructions per request (docs/proposals/
-- 008-records-mirrored.patch). The history's steps are `records`; the view `steps` shows
-- every step of every row in one shape.

-- A row whose conversation is made and whose history is still being written.
CREATE TABLE rows_rebuilt (
    row_key                  TEXT PRIMARY KEY,
    source_file              TEXT NOT NULL,
    line                     INTEGER NOT NULL,
    customer_key             TEXT,
    conversation_external_id TEXT,
    state                    TEXT NOT NULL CHECK (
        state = 'pending' OR state = 'customer_sent' OR state = 'customer_ok'
        OR state = 'conversation_sent' OR state = 'conversation_ok' OR state = 'done'
        OR state = 'failed'),
    customer_id              TEXT,
    conversation_id          TEXT,
    attempts                 INTEGER NOT NULL DEFAULT 0,
    field                    TEXT,
    last_error               TEXT,
    updated_at               TEXT NOT NULL,
    outcome_unknown          INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

INSERT INTO rows_rebuilt SELECT row_key, source_file, line, customer_key,
    conversation_external_id, state, customer_id, conversation_id, attempts, field,
    last_error, updated_at, outcome_unknown FROM rows;
DROP TABLE rows;
ALTER TABLE rows_rebuilt RENAME TO rows;
CREATE INDEX rows_by_file ON rows (source_file, line);
CREATE INDEX rows_failed ON rows (source_file, field) WHERE state = 'failed';

-- One line per message or note a run has sent or is sending. No line: pending.
-- 'sent': the intent (the create left, or is about to; reconcile by lookup before sending
-- again); 'done': its Kustomer id is known; 'failed': refused (last_error), sent again
-- only by --retry-failed. `origin`: created, or reconciled (found after a lost answer).
CREATE TABLE records (
    row_key     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind = 'message' OR kind = 'note'),
    external_id TEXT NOT NULL,
    position    INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state = 'sent' OR state = 'done' OR state = 'failed'),
    kustomer_id TEXT,
    origin      TEXT CHECK (origin IS NULL OR origin = 'created' OR origin = 'reconciled'),
    attempts    INTEGER NOT NULL DEFAULT 0,
    source_file TEXT NOT NULL,
    line        INTEGER NOT NULL,
    last_error  TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (row_key, kind, external_id)
) WITHOUT ROWID;

-- Bulk jobs keep their kinds: a job of messages or notes needs `bulk_jobs.kind` to allow
-- them, and rebuilding that table here trips its items' foreign key on a checkpoint that
-- holds jobs (a DROP TABLE deletes the rows bulk_items refer to). That migration comes
-- with bulk jobs of history, outside a transaction with foreign keys off.

-- Every step of every row, in the shape of `records`: the customer and the conversation
-- read from `rows` (their state from the row's), the history from `records`. A step not
-- begun is 'pending'; 'unknown' is a failed step whose create may have landed.
CREATE VIEW steps AS
SELECT row_key, 0 AS position, 'customer' AS kind, customer_key AS key, customer_id AS kustomer_id,
    CASE
        WHEN customer_id IS NOT NULL THEN 'done'
        WHEN state = 'pending' THEN 'pending'
        WHEN state = 'customer_sent' THEN 'sent'
        WHEN outcome_unknown THEN 'unknown'
        ELSE 'failed'
    END AS state,
    source_file, line
FROM rows
UNION ALL
SELECT row_key, 1, 'conversation', conversation_external_id, conversation_id,
    CASE
        WHEN conversation_id IS NOT NULL THEN 'done'
        WHEN state = 'conversation_sent' THEN 'sent'
        WHEN state = 'failed' AND customer_id IS NOT NULL AND outcome_unknown THEN 'unknown'
        WHEN state = 'failed' AND customer_id IS NOT NULL THEN 'failed'
        ELSE 'pending'
    END,
    source_file, line
FROM rows WHERE NOT (state = 'done' AND conversation_id IS NULL)
UNION ALL
SELECT row_key, position, kind, external_id, kustomer_id, state, source_file, line
FROM records;
