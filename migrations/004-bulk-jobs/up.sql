-- Bulk jobs (--mode bulk): one line per bulk request, written with the rows it carries
-- before the request leaves, so that no job the API accepted is ever forgotten.
-- 'submitting': the request left (or is about to) and its answer is not recorded: the job
--     may exist. Its rows are reconciled by lookup, and only once the job would have run.
-- 'queued': the API took it and its id is recorded; it is polled until complete, in this
--     run or the next.
-- 'complete': its results are applied to its rows.
-- 'refused': the API refused it whole, or it never left: nothing was made.
-- 'lost': the answer to its submit never came; its rows were handed to reconciliation.
CREATE TABLE bulk_jobs (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind = 'customers' OR kind = 'conversations'),
    job_id     TEXT,
    -- OR chains, not IN lists: see migration 005.
    state      TEXT NOT NULL CHECK (state = 'submitting' OR state = 'queued'
        OR state = 'complete' OR state = 'refused' OR state = 'lost'),
    items      INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX bulk_jobs_by_state ON bulk_jobs (state);

-- The items of each job: the `_clientRef` it went out with, the row it carries and, for a
-- customers job, the customer key it creates.
CREATE TABLE bulk_items (
    job          INTEGER NOT NULL REFERENCES bulk_jobs (id),
    client_ref   TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    customer_key TEXT,
    PRIMARY KEY (job, client_ref)
) WITHOUT ROWID;
