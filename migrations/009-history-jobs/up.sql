-- Bulk jobs of history (issue 17): a job may carry messages or notes, and each of its items
-- names the record it creates, so that a run killed while the job was queued applies its
-- results to that message or note. Both tables are rebuilt, the items first: dropping
-- `bulk_jobs` while `bulk_items` still refers to it would trip the foreign key (which is
-- on), as it did when migration 008 tried this alone.
CREATE TABLE bulk_jobs_009 (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind = 'customers' OR kind = 'conversations'
        OR kind = 'messages' OR kind = 'notes'),
    job_id     TEXT,
    -- OR chains, not IN lists: see migration 005.
    state      TEXT NOT NULL CHECK (state = 'submitting' OR state = 'queued'
        OR state = 'complete' OR state = 'refused' OR state = 'lost'),
    items      INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO bulk_jobs_009 (id, kind, job_id, state, items, created_at, updated_at)
    SELECT id, kind, job_id, state, items, created_at, updated_at FROM bulk_jobs;

-- `record`: in a job of messages or notes, the externalId of the record the item creates
-- (its kind is the job's); NULL in a job of customers or conversations.
CREATE TABLE bulk_items_009 (
    job          INTEGER NOT NULL REFERENCES bulk_jobs_009 (id),
    client_ref   TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    customer_key TEXT,
    record       TEXT,
    PRIMARY KEY (job, client_ref)
) WITHOUT ROWID;
INSERT INTO bulk_items_009 (job, client_ref, row_key, customer_key)
    SELECT job, client_ref, row_key, customer_key FROM bulk_items;

DROP TABLE bulk_items;
DROP TABLE bulk_jobs;
-- Renaming the jobs' table rewrites the items' reference to it.
ALTER TABLE bulk_jobs_009 RENAME TO bulk_jobs;
ALTER TABLE bulk_items_009 RENAME TO bulk_items;
CREATE INDEX bulk_jobs_by_state ON bulk_jobs (state);
