-- A row of the audit trail may stand for several calls: the edge sums up a
-- caller's repeated refusals of one method and status per second into one row
-- (node/edge.py). Older rows count 1 (older overload summaries give their count in detail).
ALTER TABLE audit_log ADD COLUMN calls integer NOT NULL DEFAULT 1;
-- Retention trims by age (audit.retention_days).
CREATE INDEX audit_log_at ON audit_log (at);
