-- What each row's conversation and customer were when last sent, field by field (see
-- src/fingerprint.rs): a run that reads a done row again compares them with what the row
-- maps to now, and sends an update of the fields that changed, or nothing. The customer's
-- is kept per row, as that row saw it: rows of one customer may disagree (one lists a second
-- email), and a customer is updated when a row's own view of it changed, never back and
-- forth between rows. NULL: made by a version before this one, or settled from an earlier
-- run's bulk job; the next run that reads the row adopts what it maps to as what was sent.
ALTER TABLE rows ADD COLUMN fingerprint TEXT;
ALTER TABLE rows ADD COLUMN customer_fingerprint TEXT;
