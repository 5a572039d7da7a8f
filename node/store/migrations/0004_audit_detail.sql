-- What each audited call asked and was answered, beyond the count: the records
-- (origin#seq) a lookup returned, the seq range a log fetch served, or the reason
-- a call was refused. Older rows have ''.
ALTER TABLE audit_log ADD COLUMN detail text NOT NULL DEFAULT '';
CREATE INDEX audit_log_caller_at ON audit_log (caller, at);
