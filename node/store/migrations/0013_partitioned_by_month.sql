-- Checks and the audit trail are kept ten years (credit-use.md Check rule 8, Zhejiang Art. 20)
-- and must stay fast at that size: each table is partitioned by month (declarative range
-- partitioning on its time column), so retention drops whole months instead of deleting row by
-- row, and a query by subject reads each month's small index. A DEFAULT partition takes rows of
-- a month that has no partition yet (a clock far off, restored data); creating that month's
-- partition later moves them in (credex_month_partition). node/store/partitions.py creates
-- partitions ahead at start and daily, and drops those wholly older than the retention.
--
-- Partitions of a table referenced by a foreign key cannot be dropped or refilled from the
-- default partition without detaching, so the check tables no longer reference one another:
-- node/checks/checking.py stores a check and its answers in one transaction and reads the
-- answer row a feedback needs in the feedback's own transaction. Answers and feedback are
-- partitioned by the time of their check (checked_at), so a check leaves with all it holds.
--
-- The existing tables are moved aside, their rows copied into the partitioned ones, then dropped.

CREATE FUNCTION credex_month_partition(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first timestamptz := date_trunc('month', month)::timestamp AT TIME ZONE 'UTC';
    after timestamptz := (date_trunc('month', month) + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    child text := parent || '_' || to_char(month, 'YYYYMM');
    key text;
BEGIN
    IF to_regclass(child) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname INTO STRICT key
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent::regclass;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', child, parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
        parent || '_default', key, first, key, after, child
    );
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, child, first, after);
    RETURN true;
END
$$;

CREATE SCHEMA credex_0013_old;
ALTER TABLE audit_log SET SCHEMA credex_0013_old;
ALTER TABLE check_feedback SET SCHEMA credex_0013_old;
ALTER TABLE check_answers SET SCHEMA credex_0013_old;
ALTER TABLE checks SET SCHEMA credex_0013_old;

CREATE SEQUENCE audit_log_id_seq;
CREATE TABLE audit_log (
    id          bigint      NOT NULL DEFAULT nextval('audit_log_id_seq'),
    at          timestamptz NOT NULL,
    caller      text        NOT NULL,
    role        text        NOT NULL,
    method      text        NOT NULL,
    subject_id  text        NOT NULL,
    purpose     text        NOT NULL,
    answered    integer     NOT NULL,
    status      text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    calls       integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
CREATE INDEX audit_log_subject ON audit_log (subject_id);
CREATE INDEX audit_log_caller_at ON audit_log (caller, at);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE checks (
    check_id        uuid        NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    caller          text        NOT NULL,
    role            text        NOT NULL,
    requesting_unit text        NOT NULL,
    scenario        text        NOT NULL,
    purpose         text        NOT NULL,
    legal_basis     text        NOT NULL,
    subjects        integer     NOT NULL,
    PRIMARY KEY (check_id, at)
) PARTITION BY RANGE (at);
CREATE TABLE checks_default PARTITION OF checks DEFAULT;
CREATE INDEX checks_at ON checks (at);
CREATE INDEX checks_id ON checks (check_id);

CREATE TABLE check_answers (
    check_id    uuid        NOT NULL,
    checked_at  timestamptz NOT NULL,
    subject_id  text        NOT NULL,
    measure_ids text[]      NOT NULL,
    PRIMARY KEY (check_id, subject_id, checked_at)
) PARTITION BY RANGE (checked_at);
CREATE TABLE check_answers_default PARTITION OF check_answers DEFAULT;
CREATE INDEX check_answers_subject ON check_answers (subject_id);

CREATE TABLE check_feedback (
    check_id         uuid        NOT NULL,
    subject_id       text        NOT NULL,
    checked_at       timestamptz NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    caller           text        NOT NULL,
    measures_applied text[]      NOT NULL,
    outcome          text        NOT NULL,
    reason           text        NOT NULL,
    amount_yuan      numeric(20, 2),
    basis            text        NOT NULL,
    district_code    text        NOT NULL,
    department       text        NOT NULL,
    applied_on       date        NOT NULL,
    UNIQUE (check_id, subject_id, checked_at)
) PARTITION BY RANGE (checked_at);
CREATE TABLE check_feedback_default PARTITION OF check_feedback DEFAULT;

-- Months from the oldest row kept to three months ahead, then the rows.
SELECT credex_month_partition(t.parent, m::date)
  FROM (VALUES ('audit_log', (SELECT min(at) FROM credex_0013_old.audit_log)),
               ('checks', (SELECT min(at) FROM credex_0013_old.checks)),
               ('check_answers', (SELECT min(at) FROM credex_0013_old.checks)),
               ('check_feedback', (SELECT min(at) FROM credex_0013_old.checks))) AS t (parent, oldest),
       generate_series(date_trunc('month', least(coalesce(t.oldest, now()), now())),
                       date_trunc('month', now()) + interval '3 months', interval '1 month') AS m;

INSERT INTO audit_log (id, at, caller, role, method, subject_id, purpose, answered, status, detail, calls)
SELECT id, at, caller, role, method, subject_id, purpose, answered, status, detail, calls
  FROM credex_0013_old.audit_log;
SELECT setval('audit_log_id_seq', coalesce((SELECT max(id) FROM audit_log), 0) + 1, false);
INSERT INTO checks SELECT * FROM credex_0013_old.checks;
INSERT INTO check_answers (check_id, checked_at, subject_id, measure_ids)
SELECT a.check_id, c.at, a.subject_id, a.measure_ids
  FROM credex_0013_old.check_answers a JOIN credex_0013_old.checks c USING (check_id);
INSERT INTO check_feedback (check_id, subject_id, checked_at, at, caller, measures_applied, outcome, reason,
                            amount_yuan, basis, district_code, department, applied_on)
SELECT f.check_id, f.subject_id, c.at, f.at, f.caller, f.measures_applied, f.outcome, f.reason,
       f.amount_yuan, f.basis, f.district_code, f.department, f.applied_on
  FROM credex_0013_old.check_feedback f JOIN credex_0013_old.checks c USING (check_id);

DROP SCHEMA credex_0013_old CASCADE;
