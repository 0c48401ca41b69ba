-- Bulk undo (issue 20): `undo --mode bulk` deletes customers through
-- `DELETE /v1/customers/bulk?ids=`, one job per up to 100 ids. A job's line is written, with
-- the intents of its customers' deletes in `undo_deletes` naming it, in one commit before
-- the request leaves, so that no job the API may have taken is forgotten:
-- 'submitting': the request left (or is about to) and its answer is not recorded: the job
--     may exist and may still run.
-- 'queued': the API took it and its id is recorded; it is polled until it ends, in this
--     undo or the next.
-- 'complete': it ended; its customers were (or are being) read back, 404 being gone.
-- 'refused': the API refused it whole (a 4xx): nothing was deleted by it.
-- 'lost': its submit's answer never came, or the API no longer knows it: it may have run
--     or may yet run, so its customers are deleted one by one.
-- The job's results name no customer a client can rely on (the docs say nothing of a
-- delete job's results): every customer is read back after it.
CREATE TABLE undo_jobs (
    id         INTEGER PRIMARY KEY,
    job_id     TEXT,
    -- OR chains, not IN lists: see migration 005.
    state      TEXT NOT NULL CHECK (state = 'submitting' OR state = 'queued'
        OR state = 'complete' OR state = 'refused' OR state = 'lost'),
    ids        INTEGER NOT NULL,
    run        INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- The job that carries a customer's delete (NULL: a single delete).
ALTER TABLE undo_deletes ADD COLUMN job INTEGER REFERENCES undo_jobs (id);
