-- A failed row whose create may nevertheless have landed (its answer was lost and nothing
-- can look it up): `import --retry-failed` never sends it again; a person must check.
ALTER TABLE rows ADD COLUMN outcome_unknown INTEGER NOT NULL DEFAULT 0;
