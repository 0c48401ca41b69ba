-- A failed row whose create may nevertheless have landed (its answer was lost and nothing
-- can look it up): `import --retry-failed` never sends it again; a person must check.
ALTER TABLE rows ADD COLUMN outcome_unknown INTEGER NOT NULL DEFAULT 0;

-- Rows that failed this way before the column existed.
UPDATE rows SET outcome_unknown = 1
WHERE state = 'failed' AND last_error LIKE '%check Kustomer for it%';
