-- `export` and `status` read rows file by file, in line order.
CREATE INDEX rows_by_file ON rows (source_file, line);
