-- Tags by name (issue 19): the org's tags as this import last listed them or learnt them
-- from an append that made them, one line per tag, keyed by its name in lower case (names
-- match in any case: one name is never two tags). A run maps its rows' tag names to ids
-- from here and lists the org's tags (`GET /v1/tags`) only when a row names a tag this
-- table lacks: once per run, and again after an append made tags whose ids its answer
-- cannot tell apart. `origin`: 'listed' (found in the org), 'created' (made by an append
-- of this import, `--create-missing-tags`).
CREATE TABLE tags (
    name_key  TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    tag_id    TEXT NOT NULL,
    origin    TEXT NOT NULL CHECK (origin = 'listed' OR origin = 'created'),
    listed_at TEXT NOT NULL
) WITHOUT ROWID;

-- The tag names a row's conversation was last sent without (the org lacks them and
-- `--create-missing-tags` was not given), as a JSON list; NULL: none.
ALTER TABLE rows ADD COLUMN tags_missing TEXT;
