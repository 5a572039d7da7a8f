-- Measures lifted (credit-use.md, Repair 4, 8 and 9): a department that applied measures because of
-- a record learns when the record leaves force. Each answer now keeps which records triggered each
-- measure it returned ({measure id: [record id, ...]}) and every record it hit, so the feedback that
-- names a measure can be traced to the records it rests on. Answers stored before this have neither
-- (empty, not guessed): their feedback cannot be traced and is never marked lifted.
ALTER TABLE check_answers ADD COLUMN measure_records jsonb NOT NULL DEFAULT '{}';
ALTER TABLE check_answers ADD COLUMN hit_records text[] NOT NULL DEFAULT '{}';
CREATE INDEX check_answers_hit_records ON check_answers USING gin (hit_records);

-- One row per (feedback, measure applied, record it rested on) lifted by an event of the record's
-- origin, written in the transaction that applies the event. A temporary lift (HIDE) is reinstated by
-- UNHIDE, or made lasting ('window_ended') by an UNHIDE that brings the record back expired, its window
-- having ended while it was hidden; at most one row per measure and record is open (not reinstated) at a time.
CREATE TABLE lifted_measures (
    id               bigserial   PRIMARY KEY,
    check_id         uuid        NOT NULL,
    subject_id       text        NOT NULL,
    checked_at       timestamptz NOT NULL,
    requesting_unit  text        NOT NULL,   -- the unit that checked and applied the measure (USCC)
    caller           text        NOT NULL,   -- who filed the feedback
    measure_id       text        NOT NULL,
    record_id        text        NOT NULL,
    record_origin    text        NOT NULL,
    reason           text        NOT NULL CHECK (reason IN ('repaired', 'revoked', 'deleted', 'publication_ended', 'hidden', 'window_ended')),
    event_seq        bigint      NOT NULL,   -- the origin's event that lifted it
    lifted_on        date        NOT NULL,   -- the day the origin signed that event (China)
    lifted_at        timestamptz NOT NULL DEFAULT now(),
    reinstated_seq   bigint,                 -- UNHIDE: the measure applies again
    reinstated_on    date,
    acknowledged_at  timestamptz,
    acknowledged_by  text
);
CREATE UNIQUE INDEX lifted_measures_open ON lifted_measures (check_id, subject_id, measure_id, record_id)
    WHERE reinstated_seq IS NULL;
CREATE INDEX lifted_measures_record ON lifted_measures (record_id) WHERE reinstated_seq IS NULL;
CREATE INDEX lifted_measures_unit ON lifted_measures (requesting_unit, lifted_on, id);
CREATE INDEX lifted_measures_unacknowledged ON lifted_measures (id) WHERE acknowledged_at IS NULL;
