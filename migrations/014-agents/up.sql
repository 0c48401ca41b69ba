-- Agents mapped to Kustomer users (issue 19): each source agent a run met, the email it
-- was looked up by (`GET /v1/users?email=`) and the user found, NULL when the org has
-- none ('absent': never created, an invitation would be emailed). A later run, resumed or
-- not, reads this instead of asking again; an absent agent is asked again only when this
-- table loses its row.
CREATE TABLE agents (
    agent       TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    user_id     TEXT,
    resolved_at TEXT NOT NULL
) WITHOUT ROWID;
