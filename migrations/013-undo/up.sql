-- `undo` (issue 20): which run made each record, and what an undo deleted.
--
-- `made_by_run`: the run that recorded the row's conversation id, and the run that recorded
-- a customer's id as created or reconciled (NULL: a run before this migration, or a record
-- not made by the import). One run holds the checkpoint at a time and records itself in
-- `runs` before it sends anything, so the newest run is the one writing: triggers set the
-- column when the id first appears, and the writer's statements stay as they are. A
-- record an earlier run's bulk job made is the run's that settled the job.
ALTER TABLE rows ADD COLUMN made_by_run INTEGER;
ALTER TABLE customers ADD COLUMN made_by_run INTEGER;

CREATE TRIGGER rows_made_by_run_on_insert AFTER INSERT ON rows
WHEN NEW.conversation_id IS NOT NULL
BEGIN
    UPDATE rows SET made_by_run = (SELECT max(id) FROM runs) WHERE row_key = NEW.row_key;
END;

CREATE TRIGGER rows_made_by_run_on_update AFTER UPDATE OF conversation_id ON rows
WHEN NEW.conversation_id IS NOT NULL AND OLD.conversation_id IS NULL
BEGIN
    UPDATE rows SET made_by_run = (SELECT max(id) FROM runs) WHERE row_key = NEW.row_key;
END;

CREATE TRIGGER customers_made_by_run_on_insert AFTER INSERT ON customers
WHEN NEW.customer_id IS NOT NULL AND (NEW.state = 'created' OR NEW.state = 'reconciled')
BEGIN
    UPDATE customers SET made_by_run = (SELECT max(id) FROM runs)
    WHERE customer_key = NEW.customer_key;
END;

CREATE TRIGGER customers_made_by_run_on_update AFTER UPDATE OF customer_id ON customers
WHEN NEW.customer_id IS NOT NULL AND OLD.customer_id IS NULL
    AND (NEW.state = 'created' OR NEW.state = 'reconciled')
BEGIN
    UPDATE customers SET made_by_run = (SELECT max(id) FROM runs)
    WHERE customer_key = NEW.customer_key;
END;

-- Every delete an undo sends: 'sent' is the intent, written before the request leaves
-- (a rerun sends it again; a 404 then means it is gone), 'gone' the record confirmed gone
-- (a 204 and a read that answers 404, or a 404), 'failed' refused (last_error says why).
-- `run`: the undo's own line in `runs`.
CREATE TABLE undo_deletes (
    kind        TEXT NOT NULL CHECK (kind = 'conversation' OR kind = 'customer'),
    kustomer_id TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state = 'sent' OR state = 'gone' OR state = 'failed'),
    run         INTEGER NOT NULL,
    last_error  TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (kind, kustomer_id)
) WITHOUT ROWID;

-- Each run an undo took back, and when: `status` shows it on the run's line.
ALTER TABLE runs ADD COLUMN undone_at TEXT;
-- The command a line of `runs` is: 'undo', or NULL for an import.
ALTER TABLE runs ADD COLUMN command TEXT;
