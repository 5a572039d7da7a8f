-- The evidence budget of each origin as running totals, so that storing a batch of
-- rejections checks the budget without counting the origin's rows each time; and
-- last_at indexed for the age-based retention of evidence.

CREATE TABLE intake_evidence_totals (
    origin  text PRIMARY KEY,
    n_rows  bigint NOT NULL DEFAULT 0,
    n_bytes bigint NOT NULL DEFAULT 0
);

INSERT INTO intake_evidence_totals (origin, n_rows, n_bytes)
SELECT origin, count(*), coalesce(sum(coalesce(octet_length(evidence), 0) + octet_length(message)), 0)
FROM intake_rejections GROUP BY origin;

CREATE INDEX intake_rejections_last_at ON intake_rejections (last_at);
