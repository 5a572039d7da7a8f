-- ListCases pages in filing order by a cursor (filed_at, case_id): an operator's pages read the first index,
-- a filer's (the filing node and filer first) the second, each page one range scan however many cases there are.
CREATE INDEX cases_filing_order ON cases (filed_at, case_id);
CREATE INDEX cases_filer_order ON cases (filed_on, filer, filed_at, case_id);

-- The applicant's own withdrawal and review requests travel to the origin through the same outbox.
ALTER TABLE case_outbox DROP CONSTRAINT case_outbox_purpose_check;
ALTER TABLE case_outbox ADD CONSTRAINT case_outbox_purpose_check
    CHECK (purpose IN ('filing', 'receipt', 'status', 'withdrawal', 'review'));

-- 部门审核: the providing unit (its USCC) an objection was passed to; only a caller bound to it decides.
ALTER TABLE cases ADD COLUMN provider_unit text NOT NULL DEFAULT '';
CREATE INDEX cases_provider_order ON cases (provider_unit, filed_at, case_id) WHERE provider_unit <> '';
