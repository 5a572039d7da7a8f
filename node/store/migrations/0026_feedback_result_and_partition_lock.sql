-- Usage feedback (credit-use.md, Check rule 7) carries a result text and a department code
-- beside the department's name. Earlier feedback has neither: empty, not invented.
ALTER TABLE check_feedback ADD COLUMN result text NOT NULL DEFAULT '';
ALTER TABLE check_feedback ADD COLUMN department_code text NOT NULL DEFAULT '';

-- Two replicas of a node run partition maintenance at once (node/store/partitions.py). Each saw
-- the month missing and created it, and the second failed on the catalog's unique index once
-- the first committed. Making a month now takes a lock on the month's name first (class
-- 0x70617274 "part", the same lock partitions.py takes to drop one) and looks again under it.
-- And an insert not yet committed into DEFAULT (a row of the month being made) was missed by the
-- move, then failed the ATTACH: the default partition is now locked before the move (ATTACH
-- takes that lock anyway), so in-flight inserts commit first and their rows move too.
CREATE OR REPLACE FUNCTION credex_month_partition(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first timestamptz := date_trunc('month', month)::timestamp AT TIME ZONE 'UTC';
    after timestamptz := (date_trunc('month', month) + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    child text := parent || '_' || to_char(month, 'YYYYMM');
    key text;
BEGIN
    PERFORM pg_advisory_xact_lock(1885434484, hashtext(child));
    IF to_regclass(child) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent || '_default');
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
