-- Companies (issue 19): one line per company a customer of the import belongs to, keyed by
-- the source's company key (`ext:<externalId>`, or `name:<name>` for a company known only
-- by its name, sent with a derived externalId). The same life as a customer's:
-- 'sent': a create left and its answer has not been recorded (reconcile by
-- `GET /v1/companies?externalId=` before sending again); 'created': made by this import;
-- 'linked': already in Kustomer (found by the lookup before the create, or a 409), used as
-- is; 'reconciled': found by lookup after an answer was lost. A customer's company key is
-- recorded on the customer, so that every update of it carries its company's id (an update
-- that omits `company` unlinks the customer from it).
CREATE TABLE companies (
    company_key TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state = 'sent' OR state = 'created'
        OR state = 'linked' OR state = 'reconciled'),
    company_id  TEXT,
    external_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;

ALTER TABLE customers ADD COLUMN company_key TEXT;
