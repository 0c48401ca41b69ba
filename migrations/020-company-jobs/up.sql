-- Companies in bulk (issue 19): in bulk mode the companies a batch of customers needs and no
-- lookup found go as one `POST /v1/companies/bulk` job, recorded before it is sent as every
-- job is, so that a run killed while it ran polls it rather than making them again. Its
-- items name the company they make: `row_key` holds the company's key (`companies`'
-- company_key; a companies job carries no row), `customer_key` and `record` are NULL.
-- Both tables are rebuilt, the items first, as migration 012 does (a CHECK cannot be
-- altered in place).
CREATE TABLE bulk_jobs_020 (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind = 'customers' OR kind = 'conversations'
        OR kind = 'messages' OR kind = 'notes'
        OR kind = 'customer-updates' OR kind = 'conversation-updates'
        OR kind = 'companies'),
    job_id     TEXT,
    -- OR chains, not IN lists: see migration 005.
    state      TEXT NOT NULL CHECK (state = 'submitting' OR state = 'queued'
        OR state = 'complete' OR state = 'refused' OR state = 'lost'),
    items      INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO bulk_jobs_020 (id, kind, job_id, state, items, created_at, updated_at)
    SELECT id, kind, job_id, state, items, created_at, updated_at FROM bulk_jobs;

CREATE TABLE bulk_items_020 (
    job          INTEGER NOT NULL REFERENCES bulk_jobs_020 (id),
    client_ref   TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    customer_key TEXT,
    record       TEXT,
    PRIMARY KEY (job, client_ref)
) WITHOUT ROWID;
INSERT INTO bulk_items_020 (job, client_ref, row_key, customer_key, record)
    SELECT job, client_ref, row_key, customer_key, record FROM bulk_items;

DROP TABLE bulk_items;
DROP TABLE bulk_jobs;
-- Renaming the jobs' table rewrites the items' reference to it.
ALTER TABLE bulk_jobs_020 RENAME TO bulk_jobs;
ALTER TABLE bulk_items_020 RENAME TO bulk_items;
CREATE INDEX bulk_jobs_by_state ON bulk_jobs (state);
