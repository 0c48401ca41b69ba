-- What a nightly sync did (issue 18): when an update of each row's customer or conversation
-- last landed (NULL: never updated since it was made), and, per run, the rows it updated and
-- the done rows it read again unchanged, beside the rows it made (NULL: a run of a version
-- before this one).
ALTER TABLE rows ADD COLUMN synced_at TEXT;
ALTER TABLE runs ADD COLUMN rows_updated INTEGER;
ALTER TABLE runs ADD COLUMN rows_unchanged INTEGER;
