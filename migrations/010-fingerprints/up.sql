-- What each record's body was when it was last sent, field by field (see
-- src/fingerprint.rs): a run that reads a done row again compares it with what the row maps
-- to now, and sends an update of the fields that changed, or nothing. NULL: made by a
-- version before this one, or settled from an earlier run's bulk job; the next run that
-- reads the row adopts what it maps to as what was sent.
ALTER TABLE rows ADD COLUMN fingerprint TEXT;
ALTER TABLE customers ADD COLUMN fingerprint TEXT;
