-- Bulk update jobs (issue 18): in bulk mode a nightly sync's changes go as
-- `PUT /v1/customers/bulk` and `PUT /v1/conversations/bulk` jobs, recorded before they are
-- sent as creates' jobs are. Their items name the rows whose records they update
-- (`customer_key` and `record` NULL); the rows stay done. Both tables are rebuilt, the
-- items first, as migration 009 does (a CHECK cannot be altered in place).
CREATE TABLE bulk_jobs_011 (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind = 'customers' OR kind = 'conversations'
        OR kind = 'messages' OR kind = 'notes'
        OR kind = 'customer-updates' OR kind = 'conversation-updates'),
    job_id     TEXT,
    -- OR chains, not IN lists: see migration 005.
    state      TEXT NOT NULL CHECK (state = 'submitting' OR state = 'queued'
        OR state = 'complete' OR state = 'refused' OR state = 'lost'),
    items      INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO bulk_jobs_011 (id, kind, job_id, state, items, created_at, updated_at)
    SELECT id, kind, job_id, state, items, created_at, updated_at FROM bulk_jobs;

CREATE TABLE bulk_items_011 (
    job          INTEGER NOT NULL REFERENCES bulk_jobs_011 (id),
    client_ref   TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    customer_key TEXT,
    record       TEXT,
    PRIMARY KEY (job, client_ref)
) WITHOUT ROWID;
INSERT INTO bulk_items_011 (job, client_ref, row_key, customer_key, record)
    SELECT job, client_ref, row_key, customer_key, record FROM bulk_items;

DROP TABLE bulk_items;
DROP TABLE bulk_jobs;
-- Renaming the jobs' table rewrites the items' reference to it.
ALTER TABLE bulk_jobs_011 RENAME TO bulk_jobs;
ALTER TABLE bulk_items_011 RENAME TO bulk_items;
CREATE INDEX bulk_jobs_by_state ON bulk_jobs (state);
