-- ListCases pages in filing order by a cursor (filed_at, case_id): an operator's pages read the first index,
-- a filer's (the filing node and filer first) the second, each page one range scan however many cases there are.
CREATE INDEX cases_filing_order ON cases (filed_at, case_id);
CREATE INDEX cases_filer_order ON cases (filed_on, filer, filed_at, case_id);
