-- What a Check writes per subject, cut to what something reads (issue 9: a one-subject Check at the
-- GetProfile rate). Every check stores an answer per subject; few answers ever get feedback, and only
-- answers with feedback are searched by the records they hit (node/store/lifting.py lifts the measures
-- a feedback applied). So the records an answer hit are copied onto its feedback when it is filed, and
-- indexed there, instead of indexing every answer's: the same rows are found, through an index a
-- hundred times smaller that no check writes to.
ALTER TABLE check_feedback ADD COLUMN hit_records text[] NOT NULL DEFAULT '{}';
UPDATE check_feedback f SET hit_records = a.hit_records
  FROM check_answers a
 WHERE a.check_id = f.check_id AND a.subject_id = f.subject_id AND a.checked_at = f.checked_at;
CREATE INDEX check_feedback_hit_records ON check_feedback USING gin (hit_records);
DROP INDEX check_answers_hit_records;

-- The audit trail is written on every call and read by nothing through these two: who checked a
-- subject is answered from the check tables (check_answers_subject), and the retention trim reads by
-- time (audit_log_at). Each cost an insertion per audit row, a row per subject of a batch call.
DROP INDEX audit_log_subject;
DROP INDEX audit_log_caller_at;

-- checks_id repeats the first column of the checks' primary key (check_id, at), which every read by
-- check id uses as well: one insertion per check for nothing.
DROP INDEX checks_id;
