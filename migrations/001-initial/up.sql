-- The checkpoint: the source of truth for what an import has done.
-- A row's life: pending -> customer_sent -> customer_ok -> conversation_sent -> done,
-- or failed(reason). A *_sent state is an intent written before the request left:
-- its outcome is unknown until a lookup settles it.

CREATE TABLE rows (
    row_key                  TEXT PRIMARY KEY,
    source_file              TEXT NOT NULL,
    line                     INTEGER NOT NULL,
    customer_key             TEXT,
    conversation_external_id TEXT,
    state                    TEXT NOT NULL CHECK (state IN
        ('pending', 'customer_sent', 'customer_ok', 'conversation_sent', 'done', 'failed')),
    customer_id              TEXT,
    conversation_id          TEXT,
    attempts                 INTEGER NOT NULL DEFAULT 0,
    field                    TEXT,
    last_error               TEXT,
    updated_at               TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX rows_by_state ON rows (state);

-- One line per customer the import has created, linked or is creating.
-- state 'sent': a create left and its answer has not been recorded (reconcile by lookup).
-- 'created': made by this import; 'linked': already in Kustomer (409), used as is;
-- 'reconciled': found by lookup after an answer was lost.
CREATE TABLE customers (
    customer_key TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('sent', 'created', 'linked', 'reconciled')),
    customer_id  TEXT,
    external_id  TEXT,
    email        TEXT,
    phone        TEXT,
    updated_at   TEXT NOT NULL
) WITHOUT ROWID;

-- One line per run of `import`, with its arguments (never the API key) and its outcome.
CREATE TABLE runs (
    id                  INTEGER PRIMARY KEY,
    started_at          TEXT NOT NULL,
    ended_at            TEXT,
    exit_code           INTEGER,
    pid                 INTEGER NOT NULL,
    host                TEXT NOT NULL,
    args                TEXT NOT NULL,
    rows_read           INTEGER,
    rows_done           INTEGER,
    rows_failed         INTEGER,
    rows_pending        INTEGER,
    requests            INTEGER
);
