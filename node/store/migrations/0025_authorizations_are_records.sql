-- Authorizations are signed records (KIND_AUTHORIZATION) from now on: checks, reports and streams
-- all ask the records the node holds (node/authorizations). The operator-granted table of 0017 is
-- kept, every row of it, under a name that says what it is: at its next start the node signs each
-- row as a record of its own origin (and the REVOKE of those already ended) and notes the record id
-- here, so no grant is lost and none is signed twice.
ALTER TABLE authorizations RENAME TO authorizations_before_records;
ALTER INDEX authorizations_in_force RENAME TO authorizations_before_records_in_force;
ALTER TABLE authorizations_before_records ADD COLUMN record_id text;
CREATE INDEX authorizations_before_records_unsigned ON authorizations_before_records (granted_at)
    WHERE record_id IS NULL;
-- The records table is the index: authorization records are found by subject and kind.
CREATE INDEX records_authorizations ON records (subject_id) WHERE kind = 11;
