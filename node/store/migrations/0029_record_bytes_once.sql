-- A record's bytes were stored twice: in records.record, and in the envelope of the event that left
-- the record so (records.seq), whose signed payload carries them byte for byte as field 6. They are
-- now kept once, in the event. The table becomes record_states, which points into that envelope
-- (record_at: where the bytes start, 0-based; record_len: how many), and keeps the bytes itself only
-- when they are not found there (a peer's event whose record is not in canonical form; a row
-- written without its event). The view records has the table's old columns in their old order, so
-- every reader reads it as before: a query that does not name record never touches events (the
-- subquery is dropped with the column). Inserts into records (tests, benchmarks) go to
-- record_states through a trigger, with their bytes; the store itself writes record_states.
--
-- Events' received_at was written and never read: dropped.

ALTER TABLE records RENAME TO record_states;
ALTER TABLE record_states ALTER COLUMN record DROP NOT NULL;
ALTER TABLE record_states ADD COLUMN record_at integer CHECK (record_at >= 0);
ALTER TABLE record_states ADD COLUMN record_len integer CHECK (record_len >= 0);
ALTER TABLE record_states ADD CONSTRAINT record_states_bytes_somewhere
    CHECK (record IS NOT NULL OR (record_at IS NOT NULL AND record_len IS NOT NULL));

UPDATE record_states s
   SET record_at = position(s.record IN e.envelope) - 1, record_len = octet_length(s.record), record = NULL
  FROM events e
 WHERE e.origin = s.origin AND e.seq = s.seq AND position(s.record IN e.envelope) > 0;

CREATE VIEW records AS
SELECT s.record_id, s.origin, s.subject_id, s.kind, s.seq, s.status, s.sharing_level, s.publicity_end, s.digest,
       coalesce(s.record, (SELECT substring(e.envelope FROM s.record_at + 1 FOR s.record_len)
                             FROM events e WHERE e.origin = s.origin AND e.seq = s.seq)) AS record,
       s.disputed
  FROM record_states s;
ALTER VIEW records ALTER COLUMN disputed SET DEFAULT false;

CREATE FUNCTION credex_records_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO record_states (record_id, origin, subject_id, kind, seq, status, sharing_level, publicity_end,
                               digest, record, disputed)
    VALUES (NEW.record_id, NEW.origin, NEW.subject_id, NEW.kind, NEW.seq, NEW.status, NEW.sharing_level,
            NEW.publicity_end, NEW.digest, NEW.record, coalesce(NEW.disputed, false));
    RETURN NEW;
END
$$;
CREATE TRIGGER records_insert INSTEAD OF INSERT ON records FOR EACH ROW EXECUTE FUNCTION credex_records_insert();

ALTER TABLE events DROP COLUMN received_at;
