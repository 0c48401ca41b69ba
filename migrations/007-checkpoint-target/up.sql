-- The API a checkpoint was written against (issue 14): its rows' ids exist there and
-- nowhere else, so a run against another API must not skip them as done. `meta` holds the
-- checkpoint's own facts, one value a key; 'target' is the normalised base URL (scheme,
-- host, port, path) or 'sandbox', never a key. A checkpoint made before this migration has
-- none until its next run adopts that run's target.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Each run's target, so that the history stays readable after a --retarget.
ALTER TABLE runs ADD COLUMN target TEXT;
