-- rows_by_state indexed every row by its state, so each of a row's three or four state
-- changes moved its entry in a second b-tree, in the same commits as the intents. Only
-- failed rows are ever looked up by state (the status report's reasons); counting rows by
-- state reads the table. A partial index holds the failed rows alone.
DROP INDEX rows_by_state;
CREATE INDEX rows_failed ON rows (source_file, field) WHERE state = 'failed';
