-- What each message and note was when last sent (issue 18's nightly sync, for the
-- history): its body's fingerprint (src/fingerprint.rs, the fields the mapping sets, never
-- `importedAt`), recorded with its intent and kept when it is done, so that a run that
-- reads its thread again sends one PATCH of the fields an edit in the source changed, or
-- nothing. An item found after a lost answer keeps the fingerprint its intent went out
-- with: the body that may have landed. NULL: made by a version before this one; the next
-- run that reads it adopts what it maps to now as what was sent, and sends nothing.
ALTER TABLE records ADD COLUMN fingerprint TEXT;
