-- The log of every origin this node holds, the current state of every record,
-- and the bookkeeping that makes publishing and intake exactly-once in effect.

-- Head of this node's own log. The row is locked for the length of a ledger
-- transaction, so sequence numbers are dense and commit in order.
CREATE TABLE ledger_head (
    origin      text PRIMARY KEY,
    seq         bigint NOT NULL DEFAULT 0
);

-- Every verified event of every origin, as the canonical envelope bytes.
CREATE TABLE events (
    origin      text        NOT NULL,
    seq         bigint      NOT NULL CHECK (seq > 0),
    event_id    uuid        NOT NULL,
    event_type  smallint    NOT NULL,
    record_id   text        NOT NULL,
    subject_id  text        NOT NULL,
    envelope    bytea       NOT NULL,
    recorded_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, seq)
);
CREATE UNIQUE INDEX events_event_id ON events (event_id);

-- Current state of each record: the latest event (highest seq) wins.
CREATE TABLE records (
    record_id     text     PRIMARY KEY,
    origin        text     NOT NULL,
    subject_id    text     NOT NULL,
    kind          smallint NOT NULL,
    seq           bigint   NOT NULL,
    status        smallint NOT NULL,  -- credex.v1.EntryStatus: 1 active, 3 revoked
    sharing_level smallint NOT NULL,
    publicity_end date,
    digest        bytea    NOT NULL,
    record        bytea    NOT NULL
);
CREATE INDEX records_subject ON records (subject_id);
CREATE INDEX records_origin ON records (origin);

-- How far each origin's log is held without a gap, and the highest seq seen.
CREATE TABLE origin_progress (
    origin          text PRIMARY KEY,
    contiguous_seq  bigint NOT NULL DEFAULT 0,
    max_seq         bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The outbox of this node's own log is the events table itself: events with a
-- seq above published_seq are waiting for the relay. Dense, in-order commits
-- (ledger_head above) make a watermark exact.
CREATE TABLE relay_outbox (
    origin         text PRIMARY KEY,
    published_seq  bigint NOT NULL DEFAULT 0,
    published_at   timestamptz
);

-- Outcome counters of intake, per origin and outcome (applied, replay, rejected reasons).
CREATE TABLE intake_counters (
    origin  text   NOT NULL,
    outcome text   NOT NULL,
    n       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, outcome)
);

-- What failed verification: kept as evidence, never as data.
CREATE TABLE intake_rejections (
    id          bigserial PRIMARY KEY,
    origin      text        NOT NULL,
    channel     text        NOT NULL,
    reason      text        NOT NULL,
    message     text        NOT NULL,
    key_id      text,
    evidence    bytea,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Each file taken in once, by content hash, with its counts.
CREATE TABLE ingest_files (
    content_hash  bytea PRIMARY KEY,
    file_name     text        NOT NULL,
    profile       text        NOT NULL,
    rows_in       integer     NOT NULL,
    accepted      integer     NOT NULL,
    quarantined   integer     NOT NULL,
    new_records   integer     NOT NULL,
    corrected     integer     NOT NULL,
    unchanged     integer     NOT NULL,
    first_seq     bigint,
    last_seq      bigint,
    taken_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (rows_in = accepted + quarantined)
);

-- Rejected rows, with every reason, kept to be sent back to the source unit.
CREATE TABLE quarantine (
    id               bigserial PRIMARY KEY,
    content_hash     bytea       NOT NULL REFERENCES ingest_files (content_hash),
    source           text        NOT NULL,
    locator          text        NOT NULL,
    source_unit      text        NOT NULL DEFAULT '',
    source_unit_uscc text        NOT NULL DEFAULT '',
    reasons          text[]      NOT NULL,
    messages         text[]      NOT NULL,
    raw              jsonb       NOT NULL,
    taken_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_unit ON quarantine (source_unit_uscc);

-- Every lookup: who asked, about whom, why, and what was answered.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    caller      text        NOT NULL,
    role        text        NOT NULL,
    method      text        NOT NULL,
    subject_id  text        NOT NULL,
    purpose     text        NOT NULL,
    answered    integer     NOT NULL,
    status      text        NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log (subject_id);
