-- Tags by name (issue 19): the org's tags as this import last listed them or learnt them
-- from an append that made them, one line per tag, keyed by its name in lower case (names
-- match in any case: one name is never two tags). A run maps its rows' tag names to ids
-- from here and lists the org's tags (`GET /v1/tags`) only when a row names a tag this
-- table lacks, once per run (and once again after an append made tags).
CREATE TABLE tags (
    name_key  TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    tag_id    TEXT NOT NULL,
    listed_at TEXT NOT NULL
) WITHOUT ROWID;
